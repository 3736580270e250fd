//! Model shapes: the attention shape the validator reads from any GGUF (what the KV cache
//! needs), and the full shape of a `llama` model, which the converter writes and the
//! per-tensor checks and the random-weight generator follow.

use super::{GgufWriter, Value};

/// What the KV cache of a model needs: its attention shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttentionShape {
    pub n_layer: u32,
    pub n_embd: u32,
    pub n_head: u32,
    /// The most key/value heads of any layer (some architectures vary them per layer).
    pub n_head_kv: u32,
    /// Width of one key head and one value head (`n_embd / n_head` unless the file says).
    pub head_dim_k: u32,
    pub head_dim_v: u32,
    pub n_ctx_train: u32,
}

/// The shape of a Llama model (llama.cpp's `llama` architecture, MHA, untied embeddings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LlamaShape {
    pub n_layer: u32,
    pub n_embd: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_ff: u32,
    pub n_ctx_train: u32,
    /// Append CodeLlama's 16 extra tokens (vocabulary 32016, FIM pieces ▁<PRE> 32007,
    /// ▁<SUF> 32008, ▁<MID> 32009, ▁<EOT> 32010) to the base vocabulary.
    pub codellama_vocab: bool,
}

impl LlamaShape {
    /// Writes the `general.architecture` and `llama.*` hyperparameter keys llama.cpp reads.
    pub(crate) fn write_hparams(
        &self,
        w: &mut GgufWriter,
        rms_eps: f32,
        rope_base: f32,
        n_vocab: u32,
    ) {
        w.set("general.architecture", Value::String("llama".into()));
        w.set("llama.context_length", Value::U32(self.n_ctx_train));
        w.set("llama.embedding_length", Value::U32(self.n_embd));
        w.set("llama.block_count", Value::U32(self.n_layer));
        w.set("llama.feed_forward_length", Value::U32(self.n_ff));
        w.set("llama.attention.head_count", Value::U32(self.n_head));
        w.set("llama.attention.head_count_kv", Value::U32(self.n_head_kv));
        w.set(
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(rms_eps),
        );
        w.set("llama.rope.freq_base", Value::F32(rope_base));
        w.set(
            "llama.rope.dimension_count",
            Value::U32(self.n_embd / self.n_head),
        );
        w.set("llama.vocab_size", Value::U32(n_vocab));
    }

    /// The same shape with CodeLlama's vocabulary (32016 tokens with FIM pieces).
    pub fn with_codellama_vocab(mut self) -> LlamaShape {
        self.codellama_vocab = true;
        self
    }

    /// 2 layers, hidden 64: loads in milliseconds, for unit and CI tests.
    pub fn tiny() -> LlamaShape {
        LlamaShape {
            n_layer: 2,
            n_embd: 64,
            n_head: 4,
            n_head_kv: 4,
            n_ff: 128,
            n_ctx_train: 2048,
            codellama_vocab: false,
        }
    }

    /// [`LlamaShape::tiny`] with 64-wide heads (hidden 128, 2 heads, FFN 256).
    pub fn tiny_head64() -> LlamaShape {
        LlamaShape {
            n_embd: 128,
            n_head: 2,
            n_head_kv: 2,
            n_ff: 256,
            ..LlamaShape::tiny()
        }
    }

    /// CodeLlama-7b's shape (the speculative target): 32 layers, hidden 4096, 32 heads × 128,
    /// FFN 11008, its 32016-token vocabulary. For timing only: its weights are tiled noise
    /// ([`write_random_llama`]), cheap to make at 6.7 B parameters.
    pub fn codellama_7b() -> LlamaShape {
        LlamaShape {
            n_layer: 32,
            n_embd: 4096,
            n_head: 32,
            n_head_kv: 32,
            n_ff: 11008,
            n_ctx_train: 16384,
            codellama_vocab: true,
        }
    }

    /// The shape of AMD-Llama-135m(-code): 12 layers, hidden 768, 12 heads × 64, FFN 2048.
    pub fn amd_135m() -> LlamaShape {
        LlamaShape {
            n_layer: 12,
            n_embd: 768,
            n_head: 12,
            n_head_kv: 12,
            n_ff: 2048,
            n_ctx_train: 2048,
            codellama_vocab: false,
        }
    }
}
