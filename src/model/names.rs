//! The single table of GGUF tensor names and metadata keys, shared by the loader and the
//! converter so the two can never drift apart.
//!
//! Text tensors keep llama.cpp's LLaMA names; the visual copies of the four Modality-Adaptive
//! Module tensors get [`VIS_SUFFIX`]. The vision tower lives under `v.`, the abstractor under
//! `abstractor.`.

use super::Modality;

/// `general.architecture` of an mPLUG-Owl2 file.
pub const ARCH_MPLUG_OWL2: &str = "mplug-owl2";
/// `general.architecture` of a plain llama.cpp LLaMA file (text only).
pub const ARCH_LLAMA: &str = "llama";
/// Suffix of the [`Modality::Visual`] copy of a MAM tensor (upstream's `multiway.1`).
pub const VIS_SUFFIX: &str = "_vis";
/// The image marker in prompts (not a vocabulary token).
pub const IMAGE_PLACEHOLDER: &str = "<|image|>";

/// Metadata keys below an architecture prefix (`{arch}.context_length`, ...).
pub mod key {
    pub const CONTEXT_LENGTH: &str = "context_length";
    pub const EMBEDDING_LENGTH: &str = "embedding_length";
    pub const BLOCK_COUNT: &str = "block_count";
    pub const FEED_FORWARD_LENGTH: &str = "feed_forward_length";
    pub const HEAD_COUNT: &str = "attention.head_count";
    pub const HEAD_COUNT_KV: &str = "attention.head_count_kv";
    pub const RMS_EPS: &str = "attention.layer_norm_rms_epsilon";
    pub const ROPE_DIM: &str = "rope.dimension_count";
    pub const ROPE_FREQ_BASE: &str = "rope.freq_base";
    pub const ROPE_QK_PERMUTED: &str = "rope.qk_permuted";
    pub const VOCAB_SIZE: &str = "vocab_size";
    pub const MAM_MODALITY_COUNT: &str = "mam.modality_count";
    pub const MAM_VISUAL_SUFFIX: &str = "mam.visual_suffix";
    pub const MAM_TENSORS: &str = "mam.tensors";
    pub const IMAGE_TOKEN_COUNT: &str = "image.token_count";
    pub const IMAGE_PLACEHOLDER: &str = "image.placeholder";
    pub const TOKENIZER_LEGACY: &str = "tokenizer.legacy";

    pub const V_IMAGE_SIZE: &str = "vision.image_size";
    pub const V_PATCH_SIZE: &str = "vision.patch_size";
    pub const V_EMBEDDING_LENGTH: &str = "vision.embedding_length";
    pub const V_FEED_FORWARD_LENGTH: &str = "vision.feed_forward_length";
    pub const V_BLOCK_COUNT: &str = "vision.block_count";
    pub const V_HEAD_COUNT: &str = "vision.attention.head_count";
    pub const V_LN_EPS: &str = "vision.attention.layer_norm_epsilon";
    pub const V_ACTIVATION: &str = "vision.activation";
    pub const V_HAS_CLASS_TOKEN: &str = "vision.has_class_token";
    pub const V_IMAGE_MEAN: &str = "vision.image_mean";
    pub const V_IMAGE_STD: &str = "vision.image_std";
    pub const V_RESAMPLE: &str = "vision.resample";
    pub const V_ASPECT_MODE: &str = "vision.aspect_mode";
    pub const V_PAD_COLOR: &str = "vision.pad_color";

    pub const A_QUERY_COUNT: &str = "abstractor.query_count";
    pub const A_BLOCK_COUNT: &str = "abstractor.block_count";
    pub const A_HEAD_COUNT: &str = "abstractor.attention.head_count";
    pub const A_EMBEDDING_LENGTH: &str = "abstractor.embedding_length";
    pub const A_FEED_FORWARD_LENGTH: &str = "abstractor.feed_forward_length";
    pub const A_LN_EPS: &str = "abstractor.attention.layer_norm_epsilon";
    pub const A_FFN_LN_EPS: &str = "abstractor.ffn_layer_norm_epsilon";
    pub const A_GRID_SIZE: &str = "abstractor.grid_size";

    /// Generation defaults from `generation_config.json` (owlet keys).
    pub const GEN_TEMPERATURE: &str = "generation.temperature";
    pub const GEN_TOP_P: &str = "generation.top_p";
    pub const GEN_TOP_K: &str = "generation.top_k";
    pub const GEN_MAX_NEW_TOKENS: &str = "generation.max_new_tokens";
}

/// Standard (architecture-independent) keys.
pub mod gkey {
    pub const ARCHITECTURE: &str = "general.architecture";
    pub const NAME: &str = "general.name";
    pub const FILE_TYPE: &str = "general.file_type";
    pub const TOK_MODEL: &str = "tokenizer.ggml.model";
    pub const TOK_TOKENS: &str = "tokenizer.ggml.tokens";
    pub const TOK_SCORES: &str = "tokenizer.ggml.scores";
    pub const TOK_TYPES: &str = "tokenizer.ggml.token_type";
    pub const TOK_BOS: &str = "tokenizer.ggml.bos_token_id";
    pub const TOK_EOS: &str = "tokenizer.ggml.eos_token_id";
    pub const TOK_UNK: &str = "tokenizer.ggml.unknown_token_id";
    pub const TOK_PAD: &str = "tokenizer.ggml.padding_token_id";
    pub const TOK_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    pub const TOK_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
    pub const TOK_HF_JSON: &str = "tokenizer.huggingface.json";
    pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
}

/// `{arch}.{key}`.
pub fn arch_key(arch: &str, key: &str) -> String {
    format!("{arch}.{key}")
}

// ---- text decoder -------------------------------------------------------------------------

pub const TOKEN_EMBD: &str = "token_embd.weight";
pub const OUTPUT_NORM: &str = "output_norm.weight";
pub const OUTPUT: &str = "output.weight";

/// The text model's whole-model matrices by role: llama.cpp's base names (the tensor name
/// without `.weight`), which the converter's quantization rules key on together with the
/// per-layer roles of [`mod@blk`].
pub mod role {
    pub const TOKEN_EMBD: &str = "token_embd";
    pub const OUTPUT: &str = "output";
}

/// Per-layer text tensors (`blk.{i}.{name}.weight`).
pub mod blk {
    pub const ATTN_NORM: &str = "attn_norm";
    pub const ATTN_Q: &str = "attn_q";
    pub const ATTN_K: &str = "attn_k";
    pub const ATTN_V: &str = "attn_v";
    pub const ATTN_OUTPUT: &str = "attn_output";
    pub const FFN_NORM: &str = "ffn_norm";
    pub const FFN_GATE: &str = "ffn_gate";
    pub const FFN_UP: &str = "ffn_up";
    pub const FFN_DOWN: &str = "ffn_down";
    /// The four tensors the Modality-Adaptive Module duplicates (text copy = plain name).
    pub const MAM: [&str; 4] = [ATTN_NORM, ATTN_K, ATTN_V, FFN_NORM];
}

/// `blk.{layer}.{name}{suffix}.weight`: the suffix is [`VIS_SUFFIX`] for the visual copy of a
/// MAM tensor, empty for the text copy and for the shared tensors.
pub fn blk(layer: usize, name: &str, m: Modality) -> String {
    format!("blk.{layer}.{name}{}.weight", m.suffix())
}

// ---- vision tower -------------------------------------------------------------------------

pub const V_PATCH_EMBD: &str = "v.patch_embd.weight";
pub const V_CLASS_EMBD: &str = "v.class_embd";
pub const V_POSITION_EMBD: &str = "v.position_embd.weight";
pub const V_PRE_LN: &str = "v.pre_ln";
pub const V_POST_LN: &str = "v.post_ln";

/// Per-layer vision tensors (`v.blk.{i}.{name}.weight` / `.bias`).
pub mod vblk {
    pub const LN1: &str = "ln1";
    pub const ATTN_Q: &str = "attn_q";
    pub const ATTN_K: &str = "attn_k";
    pub const ATTN_V: &str = "attn_v";
    pub const ATTN_OUT: &str = "attn_out";
    pub const LN2: &str = "ln2";
    pub const FFN_UP: &str = "ffn_up";
    pub const FFN_DOWN: &str = "ffn_down";
}

/// `v.blk.{layer}.{name}.{weight|bias}`.
pub fn vblk(layer: usize, name: &str, part: &str) -> String {
    format!("{}.{part}", vblk_prefix(layer, name))
}

/// `v.blk.{layer}.{name}` (a weight/bias pair's common prefix).
pub fn vblk_prefix(layer: usize, name: &str) -> String {
    format!("v.blk.{layer}.{name}")
}

// ---- visual abstractor --------------------------------------------------------------------

pub const A_QUERY_EMBD: &str = "abstractor.query_embd";
pub const A_POS_EMBD_Q: &str = "abstractor.pos_embd_q";
pub const A_POS_EMBD_K: &str = "abstractor.pos_embd_k";
pub const A_PROJ: &str = "abstractor.proj";
pub const A_EOI_EMBD: &str = "abstractor.eoi_embd";

/// Per-layer abstractor tensors (`abstractor.blk.{i}.{name}.weight` / `.bias`).
pub mod ablk {
    pub const LN_Q: &str = "ln_q";
    pub const LN_KV: &str = "ln_kv";
    pub const ATTN_Q: &str = "attn_q";
    pub const ATTN_K: &str = "attn_k";
    pub const ATTN_V: &str = "attn_v";
    pub const ATTN_OUT: &str = "attn_out";
    pub const LN2: &str = "ln2";
    pub const FFN_GATE: &str = "ffn_gate";
    pub const FFN_UP: &str = "ffn_up";
    pub const FFN_NORM: &str = "ffn_norm";
    pub const FFN_DOWN: &str = "ffn_down";
}

/// `abstractor.blk.{layer}.{name}.{weight|bias}`.
pub fn ablk(layer: usize, name: &str, part: &str) -> String {
    format!("{}.{part}", ablk_prefix(layer, name))
}

/// `abstractor.blk.{layer}.{name}` (a weight/bias pair's common prefix).
pub fn ablk_prefix(layer: usize, name: &str) -> String {
    format!("abstractor.blk.{layer}.{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_the_tensor_names_without_weight() {
        assert_eq!(TOKEN_EMBD, format!("{}.weight", role::TOKEN_EMBD));
        assert_eq!(OUTPUT, format!("{}.weight", role::OUTPUT));
        assert_eq!(blk(3, blk::ATTN_V, Modality::Text), "blk.3.attn_v.weight");
        assert_eq!(
            blk(0, blk::ATTN_K, Modality::Visual),
            "blk.0.attn_k_vis.weight"
        );
    }
}
