//! A GGUF file's header, read with ggml's own parser (`gguf_init_from_file` with `no_alloc`):
//! metadata and tensor descriptions, never the weights.
//!
//! llama-cpp-2 wraps only part of `gguf_context`, so this file calls the few remaining
//! functions through llama-cpp-sys-2. Every getter is called only after its key's type has
//! been checked: ggml aborts the process on a type mismatch.

use std::ffi::{CStr, CString, c_char};
use std::path::Path;

use llama_cpp_sys_2 as sys;

use super::ModelError;

/// `GGML_MAX_DIMS` of ggml.h, a macro that bindgen does not export.
const GGML_MAX_DIMS: usize = 4;
use crate::core::budget::ModelShape;
use crate::core::draft::Vocabulary;

/// One tensor as the header describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml's name of its type, such as `q4_K` or `f32`.
    pub type_name: String,
    pub elements: u64,
    pub bytes: u64,
}

/// What `tierls models` and the memory budget need from a GGUF header.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufHeader {
    pub architecture: String,
    pub name: Option<String>,
    /// `general.file_type`: llama.cpp's name for how the file was quantized.
    pub file_type: Option<u64>,
    pub file_bytes: u64,
    pub tensors: Vec<TensorInfo>,
    pub has_chat_template: bool,
    pub has_fim_tokens: bool,
    pub shape: ModelShape,
    /// The tokenizer's vocabulary, when the file has one: whether another model can draft
    /// for this one.
    pub vocabulary: Option<Vocabulary>,
}

struct Context(*mut sys::gguf_context);

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `gguf_init_from_file` and is freed once.
        unsafe { sys::gguf_free(self.0) }
    }
}

impl GgufHeader {
    pub fn read(path: &Path) -> Result<GgufHeader, ModelError> {
        super::embedded::check_gguf(path)?;
        let not_gguf = |reason: String| ModelError::NotGguf {
            path: path.to_owned(),
            reason,
        };
        let file_bytes = std::fs::metadata(path)
            .map_err(|err| not_gguf(err.to_string()))?
            .len();
        let c_path = CString::new(path.to_string_lossy().as_bytes())
            .map_err(|_| not_gguf("a NUL in its path".into()))?;
        let params = sys::gguf_init_params {
            no_alloc: true,
            ctx: std::ptr::null_mut(),
        };
        // SAFETY: a valid C string and parameters that allocate no tensor data.
        let raw = unsafe { sys::gguf_init_from_file(c_path.as_ptr(), params) };
        if raw.is_null() {
            return Err(not_gguf(
                "ggml cannot parse its header (truncated or corrupt)".into(),
            ));
        }
        let ctx = Context(raw);
        let architecture = ctx
            .string("general.architecture")
            .ok_or_else(|| not_gguf("no general.architecture".into()))?;
        let tensors = ctx.tensors();
        let data_end = ctx.data_offset() + ctx.tensor_extent();
        if data_end > file_bytes {
            return Err(not_gguf(format!(
                "truncated: its tensors need {data_end} bytes, the file has {file_bytes}"
            )));
        }
        let key = |name: &str| format!("{architecture}.{name}");
        let n_layer = ctx.integer(&key("block_count")).unwrap_or(0);
        let n_embd = ctx.integer(&key("embedding_length")).unwrap_or(0);
        let n_head = ctx
            .integer_or_max(&key("attention.head_count"))
            .unwrap_or(0);
        let n_head_kv = ctx
            .integer_or_max(&key("attention.head_count_kv"))
            .unwrap_or(n_head);
        let head_dim = n_embd.checked_div(n_head).unwrap_or(0);
        let layer_bytes: u64 = tensors
            .iter()
            .filter(|t| t.name.starts_with("blk."))
            .map(|t| t.bytes)
            .sum();
        let shape = ModelShape {
            parameters: tensors.iter().map(|t| t.elements).sum(),
            weights_bytes: tensors.iter().map(|t| t.bytes).sum(),
            repeating_layer_bytes: layer_bytes,
            n_layer: n_layer as u32,
            n_embd: n_embd as u32,
            n_head: n_head as u32,
            n_head_kv: n_head_kv as u32,
            key_length: ctx
                .integer(&key("attention.key_length"))
                .unwrap_or(head_dim) as u32,
            value_length: ctx
                .integer(&key("attention.value_length"))
                .unwrap_or(head_dim) as u32,
            n_ctx_train: ctx.integer(&key("context_length")).unwrap_or(0) as u32,
            sliding_window: ctx
                .integer(&key("attention.sliding_window"))
                .map(|w| w as u32),
            n_vocab: ctx.array_len("tokenizer.ggml.tokens").unwrap_or(0) as u32,
        };
        Ok(GgufHeader {
            name: ctx.string("general.name"),
            file_type: ctx.integer("general.file_type"),
            has_chat_template: ctx.find("tokenizer.chat_template").is_some(),
            has_fim_tokens: [
                "tokenizer.ggml.fim_pre_token_id",
                "tokenizer.ggml.fim_suf_token_id",
                "tokenizer.ggml.fim_mid_token_id",
            ]
            .iter()
            .all(|key| ctx.find(key).is_some()),
            vocabulary: ctx.vocabulary(),
            architecture,
            file_bytes,
            tensors,
            shape,
        })
    }

    /// The quantization a user knows the file by (`Q4_K_M`), from `general.file_type`, or the
    /// main tensor type when the file does not say.
    pub fn quantization(&self) -> String {
        let known = match self.file_type {
            Some(0) => "F32",
            Some(1) => "F16",
            Some(2) => "Q4_0",
            Some(3) => "Q4_1",
            Some(7) => "Q8_0",
            Some(8) => "Q5_0",
            Some(9) => "Q5_1",
            Some(10) => "Q2_K",
            Some(11) => "Q3_K_S",
            Some(12) => "Q3_K_M",
            Some(13) => "Q3_K_L",
            Some(14) => "Q4_K_S",
            Some(15) => "Q4_K_M",
            Some(16) => "Q5_K_S",
            Some(17) => "Q5_K_M",
            Some(18) => "Q6_K",
            Some(32) => "BF16",
            _ => return self.main_tensor_type(),
        };
        known.to_owned()
    }

    /// The most common tensor type by bytes.
    pub fn main_tensor_type(&self) -> String {
        let mut by_type: Vec<(String, u64)> = Vec::new();
        for tensor in &self.tensors {
            match by_type
                .iter_mut()
                .find(|(name, _)| *name == tensor.type_name)
            {
                Some((_, bytes)) => *bytes += tensor.bytes,
                None => by_type.push((tensor.type_name.clone(), tensor.bytes)),
            }
        }
        by_type
            .into_iter()
            .max_by_key(|(_, bytes)| *bytes)
            .map(|(name, _)| name)
            .unwrap_or_default()
    }
}

impl Context {
    fn find(&self, key: &str) -> Option<i64> {
        let c_key = CString::new(key).ok()?;
        // SAFETY: a live context and a valid C string.
        let id = unsafe { sys::gguf_find_key(self.0, c_key.as_ptr()) };
        (id >= 0).then_some(id)
    }

    fn string(&self, key: &str) -> Option<String> {
        let id = self.find(key)?;
        // SAFETY: the type is checked before the typed getter, which aborts on a mismatch.
        unsafe {
            if sys::gguf_get_kv_type(self.0, id) != sys::GGUF_TYPE_STRING {
                return None;
            }
            c_string(sys::gguf_get_val_str(self.0, id))
        }
    }

    /// Any integer-typed value, widened.
    fn integer(&self, key: &str) -> Option<u64> {
        let id = self.find(key)?;
        // SAFETY: each getter is called only for its own type.
        unsafe {
            match sys::gguf_get_kv_type(self.0, id) {
                sys::GGUF_TYPE_UINT8 => Some(sys::gguf_get_val_u8(self.0, id) as u64),
                sys::GGUF_TYPE_UINT16 => Some(sys::gguf_get_val_u16(self.0, id) as u64),
                sys::GGUF_TYPE_UINT32 => Some(sys::gguf_get_val_u32(self.0, id) as u64),
                sys::GGUF_TYPE_UINT64 => Some(sys::gguf_get_val_u64(self.0, id)),
                sys::GGUF_TYPE_INT32 => u64::try_from(sys::gguf_get_val_i32(self.0, id)).ok(),
                sys::GGUF_TYPE_INT64 => u64::try_from(sys::gguf_get_val_i64(self.0, id)).ok(),
                _ => None,
            }
        }
    }

    /// An integer, or the largest of an integer array (some models give one per layer).
    fn integer_or_max(&self, key: &str) -> Option<u64> {
        if let Some(value) = self.integer(key) {
            return Some(value);
        }
        let id = self.find(key)?;
        // SAFETY: the array's element type is checked before its data is read as that type.
        unsafe {
            if sys::gguf_get_kv_type(self.0, id) != sys::GGUF_TYPE_ARRAY {
                return None;
            }
            let n = sys::gguf_get_arr_n(self.0, id);
            let data = sys::gguf_get_arr_data(self.0, id);
            match sys::gguf_get_arr_type(self.0, id) {
                sys::GGUF_TYPE_INT32 => std::slice::from_raw_parts(data as *const i32, n)
                    .iter()
                    .map(|&v| v.max(0) as u64)
                    .max(),
                sys::GGUF_TYPE_UINT32 => std::slice::from_raw_parts(data as *const u32, n)
                    .iter()
                    .map(|&v| v as u64)
                    .max(),
                _ => None,
            }
        }
    }

    fn array_len(&self, key: &str) -> Option<usize> {
        let id = self.find(key)?;
        // SAFETY: the type is checked first.
        unsafe {
            (sys::gguf_get_kv_type(self.0, id) == sys::GGUF_TYPE_ARRAY)
                .then(|| sys::gguf_get_arr_n(self.0, id))
        }
    }

    /// The token texts' size and digest, and the special tokens that start and end a text.
    fn vocabulary(&self) -> Option<Vocabulary> {
        use std::hash::{DefaultHasher, Hasher};
        let id = self.find("tokenizer.ggml.tokens")?;
        // SAFETY: the array's type and element type are checked before its strings are read;
        // indices stay below its length.
        let (size, texts_digest) = unsafe {
            if sys::gguf_get_kv_type(self.0, id) != sys::GGUF_TYPE_ARRAY
                || sys::gguf_get_arr_type(self.0, id) != sys::GGUF_TYPE_STRING
            {
                return None;
            }
            let size = sys::gguf_get_arr_n(self.0, id);
            // A fixed-key hasher: the same texts give the same digest in every process.
            let mut hasher = DefaultHasher::new();
            for index in 0..size {
                let text = sys::gguf_get_arr_str(self.0, id, index);
                if !text.is_null() {
                    hasher.write(CStr::from_ptr(text).to_bytes());
                }
                hasher.write_u8(0xff);
            }
            (size, hasher.finish())
        };
        let special = |key: &str| self.integer(key).and_then(|id| u32::try_from(id).ok());
        Some(Vocabulary {
            size: u32::try_from(size).ok()?,
            texts_digest,
            bos: special("tokenizer.ggml.bos_token_id"),
            eos: special("tokenizer.ggml.eos_token_id"),
        })
    }

    fn tensors(&self) -> Vec<TensorInfo> {
        // SAFETY: indices stay below `gguf_get_n_tensors`; `ne` has GGML_MAX_DIMS entries.
        unsafe {
            (0..sys::gguf_get_n_tensors(self.0))
                .map(|id| {
                    let ne = std::slice::from_raw_parts(
                        sys::gguf_get_tensor_ne(self.0, id),
                        GGML_MAX_DIMS,
                    );
                    let kind = sys::gguf_get_tensor_type(self.0, id);
                    TensorInfo {
                        name: c_string(sys::gguf_get_tensor_name(self.0, id)).unwrap_or_default(),
                        type_name: c_string(sys::ggml_type_name(kind)).unwrap_or_default(),
                        elements: ne.iter().map(|&n| n.max(1) as u64).product(),
                        bytes: sys::gguf_get_tensor_size(self.0, id) as u64,
                    }
                })
                .collect()
        }
    }

    fn data_offset(&self) -> u64 {
        // SAFETY: a live context.
        unsafe { sys::gguf_get_data_offset(self.0) as u64 }
    }

    /// Where the last tensor's data ends, relative to the data section.
    fn tensor_extent(&self) -> u64 {
        // SAFETY: indices stay below `gguf_get_n_tensors`.
        unsafe {
            (0..sys::gguf_get_n_tensors(self.0))
                .map(|id| {
                    (sys::gguf_get_tensor_offset(self.0, id)
                        + sys::gguf_get_tensor_size(self.0, id)) as u64
                })
                .max()
                .unwrap_or(0)
        }
    }
}

/// # Safety
/// `ptr` is null or a NUL-terminated string that outlives the call.
unsafe fn c_string(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller.
    Some(
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned(),
    )
}
