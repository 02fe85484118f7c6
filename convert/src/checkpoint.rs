//! A Hugging Face checkpoint directory as one list of tensors, read lazily.
//!
//! Supported layouts, tried in this order (safetensors first because it
//! needs no pickle at all):
//! 1. `model.safetensors.index.json` + the shards its `weight_map` names
//! 2. `model.safetensors`
//! 3. `pytorch_model.bin.index.json` + the `pytorch_model-*.bin` shards
//! 4. `pytorch_model.bin`
//!
//! [`Checkpoint::open`] reads only headers, zip directories and pickles, and
//! cross-checks them with the index; tensor bytes are read on demand by
//! [`Checkpoint::read_raw`] / [`Checkpoint::read_f32`].

use crate::pickle::StorageDType;
use crate::pickle::TensorRef;
use crate::safetensors::{SafeTensorInfo, SafeTensorsFile};
use crate::torch_zip::TorchZip;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Largest index JSON accepted (the 7B index is about 30 KB).
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// Element type of a source tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16 (the top half of an f32).
    BF16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Safetensors-style name: `F32`, `F16`, `BF16`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
        }
    }
}

/// Where a tensor's bytes live inside its file.
#[derive(Clone, Debug, PartialEq)]
enum Location {
    Torch(TensorRef),
    Safe(SafeTensorInfo),
}

/// One tensor of the checkpoint. The location is private; read it through
/// the [`Checkpoint`] that listed it.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceTensor {
    /// State-dict name, e.g. `model.layers.0.mlp.up_proj.weight`.
    pub name: String,
    /// Element type as stored.
    pub dtype: DType,
    /// Shape in PyTorch order (outermost first), e.g. `[out, in]` for a Linear weight.
    pub shape: Vec<usize>,
    /// Index into the checkpoint's shard list.
    file: usize,
    location: Location,
}

impl SourceTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        // Products were checked for overflow when the file was opened.
        self.shape.iter().product()
    }

    /// Number of bytes in the source dtype.
    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }
}

/// One opened weight file.
#[derive(Debug)]
enum Shard {
    Torch(TorchZip),
    Safe(SafeTensorsFile),
}

impl Shard {
    fn open(path: &Path) -> Result<Shard> {
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        Ok(if is_safetensors {
            Shard::Safe(SafeTensorsFile::open(path)?)
        } else {
            Shard::Torch(TorchZip::open(path)?)
        })
    }

    fn path(&self) -> &Path {
        match self {
            Shard::Torch(z) => z.path(),
            Shard::Safe(s) => s.path(),
        }
    }

    /// The shard's tensors in file order; `file` is this shard's index.
    fn entries(&self, file: usize) -> Result<Vec<SourceTensor>> {
        match self {
            Shard::Torch(z) => z
                .tensors()
                .iter()
                .map(|(name, t)| {
                    let dtype = torch_dtype(t.dtype).ok_or_else(|| {
                        anyhow!(
                            "tensor {name} in {} has unsupported dtype {} \
                             (only float32, float16, bfloat16)",
                            z.path().display(),
                            t.dtype.torch_name()
                        )
                    })?;
                    Ok(SourceTensor {
                        name: name.clone(),
                        dtype,
                        shape: t.shape.clone(),
                        file,
                        location: Location::Torch(t.clone()),
                    })
                })
                .collect(),
            Shard::Safe(s) => Ok(s
                .tensors()
                .iter()
                .map(|t| SourceTensor {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    file,
                    location: Location::Safe(t.clone()),
                })
                .collect()),
        }
    }
}

fn torch_dtype(d: StorageDType) -> Option<DType> {
    match d {
        StorageDType::F32 => Some(DType::F32),
        StorageDType::F16 => Some(DType::F16),
        StorageDType::BF16 => Some(DType::BF16),
        _ => None,
    }
}

/// A checkpoint directory: every tensor of every shard, validated, unread.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// Sorted by name.
    tensors: Vec<SourceTensor>,
    by_name: HashMap<String, usize>,
    warnings: Vec<String>,
}

impl Checkpoint {
    /// Opens the checkpoint in `dir` (see the module docs for the layouts).
    /// Fails, naming the file and tensor, on a missing or unreadable shard, a
    /// tensor the index lists but its shard lacks, a tensor in two shards, an
    /// unsupported dtype, or anything the pickle/safetensors readers refuse.
    /// Tensors found in a shard but absent from the index are kept and
    /// reported by [`Checkpoint::warnings`].
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let (path, is_index) = layout(dir)?;
        if is_index {
            Self::open_index(dir, &path)
        } else {
            let shard = Shard::open(&path)?;
            Self::assemble(dir, vec![shard], None)
        }
    }

    /// Every weight file [`Checkpoint::open`] would read in `dir`: the index JSON and the
    /// shards it names (whether or not they exist), or the single weight file. Reads only the
    /// index.
    pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
        let (path, is_index) = layout(dir)?;
        let mut files = Vec::new();
        if is_index {
            let shards: BTreeSet<String> = read_weight_map(&path)?.into_values().collect();
            files.extend(shards.iter().map(|s| dir.join(s)));
        }
        files.push(path);
        Ok(files)
    }

    /// Opens a sharded checkpoint from its index JSON.
    fn open_index(dir: &Path, index_path: &Path) -> Result<Checkpoint> {
        let weight_map = read_weight_map(index_path)?;
        let shard_names: BTreeSet<&String> = weight_map.values().collect();
        let mut shards = Vec::with_capacity(shard_names.len());
        for name in &shard_names {
            let path = dir.join(name);
            if !path.is_file() {
                bail!(
                    "shard {} listed in {} is missing",
                    path.display(),
                    index_path.display()
                );
            }
            shards.push(Shard::open(&path)?);
        }
        Self::assemble(dir, shards, Some((index_path, &weight_map)))
    }

    /// Collects the tensors of `shards` and cross-checks them with the index.
    fn assemble(
        dir: &Path,
        shards: Vec<Shard>,
        index: Option<(&Path, &BTreeMap<String, String>)>,
    ) -> Result<Checkpoint> {
        let mut tensors = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut warnings = Vec::new();
        for (file, shard) in shards.iter().enumerate() {
            let shard_path = shard.path();
            let shard_file = file_name(shard_path);
            for tensor in shard.entries(file)? {
                let name = &tensor.name;
                if let Some(&prev) = by_name.get(name) {
                    let prev: &SourceTensor = &tensors[prev];
                    bail!(
                        "tensor {name} is in both {} and {}",
                        shards[prev.file].path().display(),
                        shard_path.display()
                    );
                }
                if let Some((index_path, map)) = index {
                    if map.get(name) != Some(&shard_file) {
                        warnings.push(format!(
                            "tensor {name} is in {} but {} does not list it there",
                            shard_path.display(),
                            index_path.display()
                        ));
                    }
                }
                by_name.insert(name.clone(), tensors.len());
                tensors.push(tensor);
            }
        }
        if let Some((index_path, map)) = index {
            for (name, shard_file) in map {
                let found = by_name.get(name).map(|&i| shards[tensors[i].file].path());
                if found.map(file_name).as_ref() != Some(shard_file) {
                    bail!(
                        "tensor {name} listed in {} is absent from its shard {}{}",
                        index_path.display(),
                        dir.join(shard_file).display(),
                        found
                            .map(|p| format!(" (found in {})", p.display()))
                            .unwrap_or_default()
                    );
                }
            }
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        let by_name = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Checkpoint {
            dir: dir.to_owned(),
            shards,
            tensors,
            by_name,
            warnings,
        })
    }

    /// The directory this checkpoint was opened from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// All tensors, sorted by name (byte order).
    pub fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }

    /// Looks a tensor up by name.
    pub fn get(&self, name: &str) -> Option<&SourceTensor> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// Non-fatal findings of [`Checkpoint::open`] (tensors missing from the index).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The weight files (shards) this checkpoint reads, sorted by name; the
    /// index JSON is not included.
    pub fn files(&self) -> Vec<PathBuf> {
        self.shards.iter().map(|s| s.path().to_owned()).collect()
    }

    /// Reads the raw little-endian bytes of `t` in its source dtype
    /// (`t.nbytes()` bytes, C order).
    pub fn read_raw(&self, t: &SourceTensor) -> Result<Vec<u8>> {
        let own = self.get(&t.name);
        if own != Some(t) {
            bail!(
                "tensor {} does not belong to checkpoint {}",
                t.name,
                self.dir.display()
            );
        }
        let shard = &self.shards[t.file];
        let bytes = match (&t.location, shard) {
            (Location::Torch(r), Shard::Torch(z)) => z.read_tensor(&t.name, r)?,
            (Location::Safe(info), Shard::Safe(s)) => s.read(info)?,
            _ => bail!("tensor {} has a location of the wrong file kind", t.name),
        };
        if bytes.len() != t.nbytes() {
            bail!(
                "tensor {} from {}: read {} bytes, expected {}",
                t.name,
                shard.path().display(),
                bytes.len(),
                t.nbytes()
            );
        }
        Ok(bytes)
    }

    /// Reads `t` converted to f32. F16 and BF16 widen exactly.
    pub fn read_f32(&self, t: &SourceTensor) -> Result<Vec<f32>> {
        let raw = self
            .read_raw(t)
            .with_context(|| format!("reading {} as f32", t.name))?;
        Ok(match t.dtype {
            DType::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            DType::F16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::BF16 => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        })
    }
}

/// The weight layouts, in the order they are tried: (file, is an index).
const LAYOUTS: [(&str, bool); 4] = [
    ("model.safetensors.index.json", true),
    ("model.safetensors", false),
    ("pytorch_model.bin.index.json", true),
    ("pytorch_model.bin", false),
];

/// The first layout file of [`LAYOUTS`] present in `dir`, and whether it is an index.
fn layout(dir: &Path) -> Result<(PathBuf, bool)> {
    for (file, is_index) in LAYOUTS {
        let path = dir.join(file);
        if path.is_file() {
            return Ok((path, is_index));
        }
    }
    bail!(
        "no checkpoint in {}: looked for {}",
        dir.display(),
        LAYOUTS.map(|(f, _)| f).join(", ")
    )
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads `weight_map` (tensor name -> shard file name) from an index JSON,
/// refusing shard names that are not plain file names.
fn read_weight_map(index_path: &Path) -> Result<BTreeMap<String, String>> {
    let shown = index_path.display();
    let len = std::fs::metadata(index_path)
        .with_context(|| format!("cannot stat {shown}"))?
        .len();
    if len > MAX_INDEX_BYTES {
        bail!("{shown} is {len} bytes (limit {MAX_INDEX_BYTES})");
    }
    let text =
        std::fs::read_to_string(index_path).with_context(|| format!("cannot read {shown}"))?;
    let json: Value =
        serde_json::from_str(&text).map_err(|e| anyhow!("{shown} is not valid JSON: {e}"))?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow!("{shown} has no weight_map object"))?;
    let mut out = BTreeMap::new();
    for (name, shard) in map {
        let shard = shard
            .as_str()
            .ok_or_else(|| anyhow!("{shown}: weight_map entry {name} is not a string"))?;
        let plain = !shard.is_empty()
            && shard != "."
            && shard != ".."
            && !shard.contains(['/', '\\'])
            && !shard.contains('\0');
        if !plain {
            bail!(
                "{shown}: weight_map entry {name} names {shard:?}, which is not a plain file name"
            );
        }
        out.insert(name.clone(), shard.to_owned());
    }
    if out.is_empty() {
        bail!("{shown}: weight_map is empty");
    }
    Ok(out)
}
