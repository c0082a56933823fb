//! Streaming safetensors writer: shards with `model.safetensors.index.json`, one tensor in
//! memory at a time, so checkpoints larger than RAM can be written.

use crate::checkpoint::Dtype;
use crate::error::{ModelError, Result};
use std::io::{BufWriter, Write};
use std::path::Path;

#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dtype: Dtype, shape: &[usize]) -> Self {
        TensorSpec { name: name.into(), dtype, shape: shape.to_vec() }
    }
    pub fn bytes(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64 * self.dtype.size() as u64
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.to_path_buf(), cause: source }
}

/// Writes `specs` into `dir` as shards of at most `shard_bytes` (a tensor larger than that gets
/// a shard of its own), calling `fill` for each tensor's bytes in order. Returns the shard count.
pub fn write_sharded(
    dir: &Path,
    specs: &[TensorSpec],
    shard_bytes: u64,
    fill: &(dyn Fn(&TensorSpec) -> Vec<u8> + Sync),
    mut on_tensor: impl FnMut(u64),
) -> Result<usize> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut shards: Vec<Vec<&TensorSpec>> = vec![vec![]];
    let mut size = 0u64;
    for s in specs {
        if size > 0 && size + s.bytes() > shard_bytes {
            shards.push(vec![]);
            size = 0;
        }
        size += s.bytes();
        shards.last_mut().expect("one shard at least").push(s);
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    let mut total = 0u64;
    for (i, shard) in shards.iter().enumerate() {
        let fname = if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
        };
        let path = dir.join(&fname);
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let mut off = 0u64;
        for s in shard {
            header.insert(
                s.name.clone(),
                serde_json::json!({"dtype": s.dtype.name(), "shape": s.shape, "data_offsets": [off, off + s.bytes()]}),
            );
            off += s.bytes();
            weight_map.insert(s.name.clone(), fname.clone().into());
        }
        total += off;
        let mut h =
            serde_json::to_vec(&serde_json::Value::Object(header)).map_err(|e| ModelError::Invalid(e.to_string()))?;
        while h.len() % 8 != 0 {
            h.push(b' ');
        }
        let f = std::fs::File::create(&path).map_err(io(&path))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(&(h.len() as u64).to_le_bytes()).map_err(io(&path))?;
        w.write_all(&h).map_err(io(&path))?;
        for s in shard {
            let data = fill(s);
            if data.len() as u64 != s.bytes() {
                return Err(ModelError::Invalid(format!(
                    "generator produced {} bytes for `{}`, expected {}",
                    data.len(),
                    s.name,
                    s.bytes()
                )));
            }
            w.write_all(&data).map_err(io(&path))?;
            on_tensor(s.bytes());
        }
        w.flush().map_err(io(&path))?;
    }
    if n > 1 {
        let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        let path = dir.join("model.safetensors.index.json");
        let text = serde_json::to_string_pretty(&index).map_err(|e| ModelError::Invalid(e.to_string()))?;
        std::fs::write(&path, text).map_err(io(&path))?;
    } else {
        let _ = std::fs::remove_file(dir.join("model.safetensors.index.json"));
    }
    Ok(n)
}
