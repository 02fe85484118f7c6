//! Harness for the converter's pickle VM (see `mod.rs`).

/// A state-dict pickle from arbitrary bytes: `Ok` results must describe tensors whose element
/// count and byte size are computable without overflow being silently ignored.
pub fn pickle_reader(data: &[u8]) {
    let Ok(entries) = owlet_convert::pickle::parse_state_dict(data, "fuzz.pkl") else {
        return;
    };
    let mut names = std::collections::HashSet::new();
    for (name, t) in &entries {
        assert!(
            names.insert(name.as_str()),
            "duplicate entry {name:?} accepted"
        );
        // `numel` is checked arithmetic: None (refused later) or the true product.
        if let Some(n) = t.numel() {
            let mut p: u128 = 1;
            for &s in &t.shape {
                p *= s as u128;
            }
            assert_eq!(n as u128, p, "numel of {name:?}");
        }
        let _ = t.is_c_contiguous();
    }
}
