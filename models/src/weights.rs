//! Memory-mapped HuggingFace safetensors weights (F32, F16, BF16), read tensor by tensor.

use crate::{ModelError, Result};
use safetensors::tensor::{Dtype, Metadata};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

/// A `model.safetensors` file mapped read-only. Tensors are converted on request, one at a time,
/// so the whole model is never copied; the header (names, dtypes, shapes, offsets) is validated
/// when the file is opened, including that the file is not truncated.
pub struct WeightFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    data_start: usize,
    meta: Metadata,
}

impl std::fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl WeightFile {
    /// Maps and validates `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        // SAFETY: the mapping is read-only and private to this process. Undefined behaviour
        // would need another process to truncate or rewrite the model file while Duet runs;
        // model folders are inputs that must not change during a run (stated in the README).
        // `tests/bad_models.rs` exercises truncated and malformed files through this path.
        #[allow(unsafe_code)]
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let (n, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| ModelError::Safetensors {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            data_start: 8 + n,
            meta,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.meta.info(name).is_some()
    }

    /// Names of all tensors.
    pub fn names(&self) -> Vec<String> {
        self.meta.tensors().into_keys().collect()
    }

    /// A tensor's shape.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.meta
            .info(name)
            .map(|i| i.shape.clone())
            .ok_or_else(|| self.missing(name))
    }

    fn missing(&self, name: &str) -> ModelError {
        ModelError::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
        }
    }

    /// Reads tensor `name` as f32, checking its shape against `expected`.
    pub fn read_f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let info = self.meta.info(name).ok_or_else(|| self.missing(name))?;
        if info.shape != expected {
            return Err(ModelError::Shape {
                path: self.path.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
                got: info.shape.clone(),
            });
        }
        let (a, b) = info.data_offsets;
        let bytes = self
            .mmap
            .get(self.data_start + a..self.data_start + b)
            .ok_or_else(|| ModelError::Safetensors {
                path: self.path.clone(),
                reason: format!("tensor {name:?} lies outside the file"),
            })?;
        // `chunks_exact(n)` yields exactly n bytes, so the conversions below never fall back.
        let out: Vec<f32> = match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes(c.try_into().unwrap_or([0; 2])).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes(c.try_into().unwrap_or([0; 2])).to_f32())
                .collect(),
            other => {
                return Err(ModelError::Dtype {
                    path: self.path.clone(),
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let numel: usize = expected.iter().product();
        if out.len() != numel {
            return Err(ModelError::Safetensors {
                path: self.path.clone(),
                reason: format!(
                    "tensor {name:?} holds {} values, shape needs {numel}",
                    out.len()
                ),
            });
        }
        Ok(out)
    }

    /// Reads tensor `name` as f64.
    pub fn read_f64(&self, name: &str, expected: &[usize]) -> Result<Vec<f64>> {
        Ok(self
            .read_f32(name, expected)?
            .into_iter()
            .map(f64::from)
            .collect())
    }
}
