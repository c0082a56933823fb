//! Safetensors checkpoints: single files or shards with `model.safetensors.index.json`.
//!
//! Opening reads only the headers. [`Checkpoint::read`] then reads just the tensors asked for,
//! in parallel, with positioned reads (no mmap: a worker reading its shard of an 865 GB model
//! must not fault in anything else), showing a progress bar when stderr is a terminal. Every
//! problem is reported with the file and the tensor.

use crate::error::{ModelError, Result};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    F8E4M3,
    F8E8M0,
    I8,
    U8,
    I32,
    I64,
}

impl Dtype {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "F8_E4M3" => Dtype::F8E4M3,
            "F8_E8M0" | "F8_E8M0FNU" => Dtype::F8E8M0,
            "I8" => Dtype::I8,
            "U8" => Dtype::U8,
            "I32" => Dtype::I32,
            "I64" => Dtype::I64,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E8M0 => "F8_E8M0",
            Dtype::I8 => "I8",
            Dtype::U8 => "U8",
            Dtype::I32 => "I32",
            Dtype::I64 => "I64",
        }
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F8E4M3 | Dtype::F8E8M0 | Dtype::I8 | Dtype::U8 => 1,
            Dtype::I64 => 8,
        }
    }
}

/// Where one tensor lives.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub file: usize,
    /// Absolute byte offset in the file.
    pub offset: u64,
    pub len: u64,
}

/// A tensor's bytes as stored.
#[derive(Clone, Debug)]
pub struct RawTensor {
    pub name: String,
    pub path: PathBuf,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl RawTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn err(&self, reason: impl Into<String>) -> ModelError {
        ModelError::Tensor { path: self.path.clone(), name: self.name.clone(), reason: reason.into() }
    }
}

#[derive(Debug)]
pub struct Checkpoint {
    pub files: Vec<PathBuf>,
    tensors: BTreeMap<String, TensorInfo>,
}

const INDEX: &str = "model.safetensors.index.json";

impl Checkpoint {
    /// Opens a checkpoint folder: the index if there is one, else `model.safetensors`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join(INDEX);
        if index.exists() {
            let text = std::fs::read_to_string(&index)
                .map_err(|source| ModelError::Io { path: index.clone(), cause: source })?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ModelError::Format { path: index.clone(), reason: e.to_string() })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::Format { path: index.clone(), reason: "no `weight_map` object".into() })?;
            let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(str::to_string)).collect();
            files.sort();
            files.dedup();
            if files.iter().any(|f| f.contains('/') || f.contains("..")) {
                return Err(ModelError::Format { path: index, reason: "shard names must be plain file names".into() });
            }
            let ck = Self::open_files(&files.iter().map(|f| dir.join(f)).collect::<Vec<_>>())?;
            for (name, f) in map {
                if !ck.tensors.contains_key(name) {
                    return Err(ModelError::Format {
                        path: index.clone(),
                        reason: format!("tensor `{name}` is listed in {} but not found there", f),
                    });
                }
            }
            return Ok(ck);
        }
        let single = dir.join("model.safetensors");
        if single.exists() {
            return Self::open_files(&[single]);
        }
        Err(ModelError::NoCheckpoint { dir: dir.to_path_buf() })
    }

    /// Opens explicit safetensors files as one checkpoint.
    pub fn open_files(files: &[PathBuf]) -> Result<Self> {
        let mut tensors = BTreeMap::new();
        for (fi, path) in files.iter().enumerate() {
            for (name, info) in read_header(path, fi)? {
                if tensors.insert(name.clone(), info).is_some() {
                    return Err(ModelError::Format {
                        path: path.clone(),
                        reason: format!("tensor `{name}` appears twice"),
                    });
                }
            }
        }
        Ok(Checkpoint { files: files.to_vec(), tensors })
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    pub fn path_of(&self, name: &str) -> Option<&Path> {
        self.tensors.get(name).map(|i| self.files[i.file].as_path())
    }

    /// Total payload bytes of the named tensors (those present).
    pub fn bytes_of<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> u64 {
        names.into_iter().filter_map(|n| self.tensors.get(n)).map(|i| i.len).sum()
    }

    /// Reads one tensor (a positioned read; nothing else of the file is touched).
    pub fn read_one(&self, name: &str) -> Result<RawTensor> {
        let info = self.tensors.get(name).ok_or_else(|| ModelError::Missing {
            name: name.to_string(),
            hint: format!(" (files: {})", self.file_list()),
        })?;
        let path = &self.files[info.file];
        let f = File::open(path).map_err(|source| ModelError::Io { path: path.clone(), cause: source })?;
        let mut data = vec![0u8; info.len as usize];
        f.read_exact_at(&mut data, info.offset)
            .map_err(|source| ModelError::Io { path: path.clone(), cause: source })?;
        Ok(RawTensor { name: name.to_string(), path: path.clone(), dtype: info.dtype, shape: info.shape.clone(), data })
    }

    /// Reads the named tensors in parallel. A missing name is an error naming it.
    pub fn read(&self, names: &[String], progress: bool) -> Result<HashMap<String, RawTensor>> {
        for n in names {
            if !self.tensors.contains_key(n) {
                return Err(ModelError::Missing { name: n.clone(), hint: format!(" (files: {})", self.file_list()) });
            }
        }
        let total: u64 = self.bytes_of(names);
        let bar = if progress { Some(progress_bar(total)) } else { None };
        let done = AtomicU64::new(0);
        let handles: Vec<File> = self
            .files
            .iter()
            .map(|p| File::open(p).map_err(|source| ModelError::Io { path: p.clone(), cause: source }))
            .collect::<Result<_>>()?;
        let out: Result<Vec<(String, RawTensor)>> = names
            .par_iter()
            .map(|n| {
                let info = &self.tensors[n];
                let path = &self.files[info.file];
                let mut data = vec![0u8; info.len as usize];
                handles[info.file]
                    .read_exact_at(&mut data, info.offset)
                    .map_err(|source| ModelError::Io { path: path.clone(), cause: source })?;
                let d = done.fetch_add(info.len, Ordering::Relaxed) + info.len;
                if let Some(b) = &bar {
                    b.set_position(d);
                }
                Ok((
                    n.clone(),
                    RawTensor {
                        name: n.clone(),
                        path: path.clone(),
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        data,
                    },
                ))
            })
            .collect();
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        Ok(out?.into_iter().collect())
    }

    fn file_list(&self) -> String {
        self.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    }
}

pub(crate) fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "loading weights {bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn read_header(path: &Path, file: usize) -> Result<Vec<(String, TensorInfo)>> {
    let fmt = |reason: String| ModelError::Format { path: path.to_path_buf(), reason };
    let f = File::open(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), cause: source })?;
    let file_len = f.metadata().map_err(|source| ModelError::Io { path: path.to_path_buf(), cause: source })?.len();
    let mut len8 = [0u8; 8];
    f.read_exact_at(&mut len8, 0).map_err(|_| fmt(format!("file is {file_len} bytes, too short for a header")))?;
    let hlen = u64::from_le_bytes(len8);
    if hlen > 100 << 20 || 8 + hlen > file_len {
        return Err(fmt(format!("header length {hlen} does not fit in a {file_len}-byte file")));
    }
    let mut header = vec![0u8; hlen as usize];
    f.read_exact_at(&mut header, 8).map_err(|e| fmt(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| fmt(format!("header is not valid JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| fmt("header is not a JSON object".into()))?;
    let base = 8 + hlen;
    let mut out = Vec::with_capacity(obj.len());
    for (name, t) in obj {
        if name == "__metadata__" {
            continue;
        }
        let terr = |reason: String| ModelError::Tensor { path: path.to_path_buf(), name: name.clone(), reason };
        let dtype_s = t.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| terr("no dtype".into()))?;
        let dtype = Dtype::parse(dtype_s).ok_or_else(|| terr(format!("unsupported dtype {dtype_s}")))?;
        let shape: Vec<usize> = t
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| terr("no shape".into()))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| terr("shape is not a list of integers".into()))?;
        let offs = t
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .filter(|a| a.len() == 2)
            .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)))
            .ok_or_else(|| terr("data_offsets must be two integers".into()))?;
        let numel =
            shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| terr("shape overflows".into()))?;
        let want = (numel * dtype.size()) as u64;
        if offs.1 < offs.0 || offs.1 - offs.0 != want {
            return Err(terr(format!(
                "data_offsets {:?} hold {} bytes but {dtype_s} {shape:?} needs {want}",
                offs,
                offs.1.saturating_sub(offs.0)
            )));
        }
        if base + offs.1 > file_len {
            return Err(terr(format!(
                "file is truncated: tensor ends at byte {} but the file has {file_len}",
                base + offs.1
            )));
        }
        out.push((name.clone(), TensorInfo { dtype, shape, file, offset: base + offs.0, len: want }));
    }
    Ok(out)
}
