#!/usr/bin/env python3
"""PyTorch / Hugging Face transformers baseline for ExpertMesh.

Loads a DeepSeek-V4 checkpoint in the official DeepSeek layout (as written by
`emesh gen-model`, float32 or FP8/FP4) into transformers' `DeepseekV4ForCausalLM`
(float32, eager attention), measures prefill and decode throughput on CPU, and
cross-checks greedy tokens and logits against `emesh`.

Usage:
  python bench_hf.py --model DIR [--threads 2] [--prompt-len 512] [--decode-steps 32]
                     [--batches 1,16] [--json OUT] [--dump-logits FILE]

Prints one JSON line with all figures (also written to --json OUT if given).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM
from transformers.cache_utils import DynamicCache

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_EMESH = os.path.join(REPO_ROOT, "target", "release", "emesh")

# ---------------------------------------------------------------------------
# Config: official DeepSeek spelling -> transformers DeepseekV4Config
# ---------------------------------------------------------------------------

CSA_RATIO = 4

# Fields that carry over under the same name.
SAME_NAME_FIELDS = [
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "q_lora_rank", "o_groups", "o_lora_rank",
    "sliding_window", "compress_rope_theta", "rope_theta", "max_position_embeddings",
    "index_n_heads", "index_head_dim", "index_topk", "hc_mult", "hc_sinkhorn_iters",
    "hc_eps", "rms_norm_eps", "n_routed_experts", "n_shared_experts",
    "num_experts_per_tok", "moe_intermediate_size", "scoring_func", "norm_topk_prob",
    "routed_scaling_factor", "swiglu_limit", "hidden_act", "num_nextn_predict_layers",
    "tie_word_embeddings", "attention_bias", "bos_token_id", "eos_token_id",
]


def _num(v):
    """4096.0 -> 4096 (the HF rope validators want ints where DeepSeek writes floats)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def hf_config_from_official(off: dict) -> DeepseekV4Config:
    n = off["num_hidden_layers"]
    ratios = list(off["compress_ratios"])[:n]  # trailing entries belong to MTP layers
    if len(ratios) != n:
        raise ValueError(f"compress_ratios has {len(ratios)} entries for {n} layers")
    layer_types, hca_rates = [], set()
    for r in ratios:
        if r == 0:
            layer_types.append("sliding_attention")
        elif r == CSA_RATIO:
            layer_types.append("compressed_sparse_attention")
        else:
            layer_types.append("heavily_compressed_attention")
            hca_rates.add(int(r))
    if len(hca_rates) > 1:
        raise ValueError(f"transformers supports one HCA ratio per model, got {sorted(hca_rates)}")
    compress_rates = {
        "compressed_sparse_attention": CSA_RATIO,
        "heavily_compressed_attention": hca_rates.pop() if hca_rates else 128,
    }
    n_hash = int(off.get("num_hash_layers", 0))
    mlp_layer_types = ["hash_moe" if i < n_hash else "moe" for i in range(n)]

    partial = off["qk_rope_head_dim"] / off["head_dim"]
    main = {"rope_type": "default", "rope_theta": float(off["rope_theta"]),
            "partial_rotary_factor": partial}
    rs = off.get("rope_scaling") or {}
    rope_type = rs.get("rope_type", rs.get("type", "default"))
    compress = {"rope_type": rope_type, "rope_theta": float(off["compress_rope_theta"]),
                "partial_rotary_factor": partial}
    if rope_type == "yarn":
        for k in ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow"):
            if k in rs:
                compress[k] = _num(rs[k])
        # DeepSeek's reference does not scale cos/sin by YaRN's mscale.
        compress["attention_factor"] = 1.0
    elif rope_type != "default":
        raise ValueError(f"unsupported rope_scaling type {rope_type!r}")

    kw = {k: off[k] for k in SAME_NAME_FIELDS if k in off}
    kw.update(
        layer_types=layer_types,
        compress_rates=compress_rates,
        mlp_layer_types=mlp_layer_types,
        partial_rotary_factor=partial,
        rope_parameters={"main": main, "compress": compress},
        attention_dropout=0.0,
        use_cache=True,
    )
    return DeepseekV4Config(**kw)


# ---------------------------------------------------------------------------
# Weights: original DeepSeek names (+ FP8/FP4 dequantization) -> HF state dict
# ---------------------------------------------------------------------------

TOP_LEVEL = {
    "embed.weight": "model.embed_tokens.weight",
    "head.weight": "lm_head.weight",
    "norm.weight": "model.norm.weight",
    "hc_head_fn": "model.hc_head.hc_fn",
    "hc_head_base": "model.hc_head.hc_base",
    "hc_head_scale": "model.hc_head.hc_scale",
}

PER_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "hc_attn_fn": "attn_hc.fn",
    "hc_attn_base": "attn_hc.base",
    "hc_attn_scale": "attn_hc.scale",
    "hc_ffn_fn": "ffn_hc.fn",
    "hc_ffn_base": "ffn_hc.base",
    "hc_ffn_scale": "ffn_hc.scale",
    "attn.attn_sink": "self_attn.sinks",
    "attn.wq_a.weight": "self_attn.q_a_proj.weight",
    "attn.q_norm.weight": "self_attn.q_a_norm.weight",
    "attn.wq_b.weight": "self_attn.q_b_proj.weight",
    "attn.wkv.weight": "self_attn.kv_proj.weight",
    "attn.kv_norm.weight": "self_attn.kv_norm.weight",
    "attn.wo_a.weight": "self_attn.o_a_proj.weight",
    "attn.wo_b.weight": "self_attn.o_b_proj.weight",
    "attn.compressor.ape": "self_attn.compressor.position_bias",
    "attn.compressor.wkv.weight": "self_attn.compressor.kv_proj.weight",
    "attn.compressor.wgate.weight": "self_attn.compressor.gate_proj.weight",
    "attn.compressor.norm.weight": "self_attn.compressor.kv_norm.weight",
    "attn.indexer.compressor.ape": "self_attn.compressor.indexer.position_bias",
    "attn.indexer.compressor.wkv.weight": "self_attn.compressor.indexer.kv_proj.weight",
    "attn.indexer.compressor.wgate.weight": "self_attn.compressor.indexer.gate_proj.weight",
    "attn.indexer.compressor.norm.weight": "self_attn.compressor.indexer.kv_norm.weight",
    "attn.indexer.wq_b.weight": "self_attn.compressor.indexer.q_b_proj.weight",
    "attn.indexer.weights_proj.weight": "self_attn.compressor.indexer.scorer.weights_proj.weight",
    "ffn.gate.weight": "mlp.gate.weight",
    "ffn.gate.bias": "mlp.gate.e_score_correction_bias",
    "ffn.gate.tid2eid": "mlp.gate.tid2eid",
    "ffn.shared_experts.w1.weight": "mlp.shared_experts.gate_proj.weight",
    "ffn.shared_experts.w2.weight": "mlp.shared_experts.down_proj.weight",
    "ffn.shared_experts.w3.weight": "mlp.shared_experts.up_proj.weight",
}

FP4_E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                         -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=torch.float32)


def dequant_fp8(w: torch.Tensor, scale: torch.Tensor, block=(128, 128)) -> torch.Tensor:
    """F8_E4M3 [out, in] with E8M0 block scales [ceil(out/128), ceil(in/128)]."""
    out_f, in_f = w.shape
    bo, bi = block
    if scale.shape != (-(-out_f // bo), -(-in_f // bi)):
        raise ValueError(f"FP8 scale shape {tuple(scale.shape)} does not fit weight {tuple(w.shape)} / {block}")
    s = scale.float().repeat_interleave(bo, 0)[:out_f].repeat_interleave(bi, 1)[:, :in_f]
    return w.float() * s


def dequant_fp4(w: torch.Tensor, scale: torch.Tensor, block: int = 32) -> torch.Tensor:
    """I8 [out, in/2] packed e2m1 (low nibble = even column) with E8M0 scales [out, in/32]."""
    b = w.view(torch.uint8)
    out_f, half = b.shape
    in_f = half * 2
    if scale.shape != (out_f, -(-in_f // block)):
        raise ValueError(f"FP4 scale shape {tuple(scale.shape)} does not fit weight [{out_f}, {in_f}] / {block}")
    vals = torch.empty(out_f, in_f, dtype=torch.float32)
    vals[:, 0::2] = FP4_E2M1[(b & 0x0F).long()]
    vals[:, 1::2] = FP4_E2M1[(b >> 4).long()]
    return vals * scale.float().repeat_interleave(block, 1)[:, :in_f]


def checkpoint_files(model_dir: str) -> list[str]:
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        return [os.path.join(model_dir, x) for x in files]
    files = sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {model_dir}")
    return files


def load_original_tensors(model_dir: str, fp8_block=(128, 128)) -> tuple[dict[str, torch.Tensor], dict]:
    """All tensors as float32 (ints kept as int64), FP8/FP4 dequantized, original names."""
    raw = {}
    for path in checkpoint_files(model_dir):
        with safe_open(path, framework="pt") as f:
            for k in f.keys():
                raw[k] = f.get_tensor(k)
    out, stats = {}, {"fp8": 0, "fp4": 0, "bf16": 0, "f32": 0, "int": 0}
    for k, t in raw.items():
        if k.endswith(".scale"):
            continue
        if k.endswith(".weight") and (k[:-len(".weight")] + ".scale") in raw:
            s = raw[k[:-len(".weight")] + ".scale"]
            if t.dtype == torch.float8_e4m3fn:
                out[k] = dequant_fp8(t, s, fp8_block)
                stats["fp8"] += 1
            elif t.dtype in (torch.int8, torch.uint8):
                out[k] = dequant_fp4(t, s)
                stats["fp4"] += 1
            else:
                raise ValueError(f"{k}: scale given for dtype {t.dtype}")
        elif t.dtype in (torch.int32, torch.int64):
            out[k] = t.long()
            stats["int"] += 1
        else:
            stats["bf16" if t.dtype == torch.bfloat16 else "f32"] += 1
            out[k] = t.float()
    del raw
    return out, stats


def hf_state_dict(orig: dict[str, torch.Tensor], cfg: DeepseekV4Config) -> dict[str, torch.Tensor]:
    sd, unmapped = {}, []
    n_exp = cfg.n_routed_experts
    for k, t in orig.items():
        if k in TOP_LEVEL:
            sd[TOP_LEVEL[k]] = t
            continue
        parts = k.split(".", 2)
        if parts[0] == "layers" and len(parts) == 3:
            i, rest = int(parts[1]), parts[2]
            if rest in PER_LAYER:
                sd[f"model.layers.{i}.{PER_LAYER[rest]}"] = t
                continue
            if rest.startswith("ffn.experts."):
                continue  # stacked below
        if k.startswith("mtp."):
            continue  # transformers does not implement MTP
        unmapped.append(k)
    if unmapped:
        raise KeyError(f"unmapped checkpoint tensors: {unmapped[:10]} ...")
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}.ffn.experts."
        sd[f"model.layers.{i}.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([orig[f"{p}{e}.w1.weight"], orig[f"{p}{e}.w3.weight"]], 0) for e in range(n_exp)])
        sd[f"model.layers.{i}.mlp.experts.down_proj"] = torch.stack(
            [orig[f"{p}{e}.w2.weight"] for e in range(n_exp)])
    return sd


def build_model(model_dir: str, experts_impl: str):
    with open(os.path.join(model_dir, "config.json")) as f:
        off = json.load(f)
    cfg = hf_config_from_official(off)
    cfg._attn_implementation = "eager"
    cfg._experts_implementation = experts_impl
    t0 = time.perf_counter()
    qc = off.get("quantization_config") or {}
    orig, stats = load_original_tensors(model_dir, tuple(qc.get("weight_block_size", (128, 128))))
    sd = hf_state_dict(orig, cfg)
    del orig
    torch.manual_seed(0)
    model = DeepseekV4ForCausalLM(cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # Hash-routed layers have no correction bias in the checkpoint; the HF buffer stays zero
    # (it is unused by the hash router).
    missing = [m for m in missing if not (m.endswith("mlp.gate.e_score_correction_bias")
                                          and cfg.mlp_layer_types[int(m.split(".")[2])] == "hash_moe")]
    if missing or unexpected:
        raise KeyError(f"state dict mismatch: missing={missing[:10]} unexpected={unexpected[:10]}")
    del sd
    model = model.float().eval()
    load_s = time.perf_counter() - t0
    return model, cfg, off, stats, load_s


# ---------------------------------------------------------------------------
# Inference helpers
# ---------------------------------------------------------------------------

def new_cache(cfg):
    return DynamicCache(config=cfg)


@torch.inference_mode()
def prefill(model, cfg, ids: torch.Tensor, all_logits: bool = False):
    cache = new_cache(cfg)
    out = model(input_ids=ids, past_key_values=cache, use_cache=True,
                logits_to_keep=0 if all_logits else 1)
    return out.logits, out.past_key_values


@torch.inference_mode()
def decode_step(model, tok: torch.Tensor, cache):
    out = model(input_ids=tok, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1, :], out.past_key_values


def random_ids(n_rows: int, n: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, vocab, (n_rows, n), generator=g, dtype=torch.long)


# ---------------------------------------------------------------------------
# Cross-check against emesh
# ---------------------------------------------------------------------------

@torch.inference_mode()
def hf_reference(model, cfg, ids: list[int], n_gen: int):
    x = torch.tensor([ids], dtype=torch.long)
    logits, cache = prefill(model, cfg, x, all_logits=True)
    prefill_logits = logits[0].float().clone()  # [L, V]
    step = prefill_logits[-1]
    gen, steps = [], []
    for k in range(n_gen):
        steps.append(step.clone())
        tok = int(step.argmax())
        gen.append(tok)
        if k + 1 < n_gen:
            step, cache = decode_step(model, torch.tensor([[tok]]), cache)
            step = step[0].float()
    return prefill_logits, gen, torch.stack(steps)


def run_json(cmd: list[str], timeout: int = 3600):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    line = next((l for l in reversed(p.stdout.strip().splitlines()) if l.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc {p.returncode}): {p.stderr[-2000:]}")
    return json.loads(line), p.returncode


def cross_check(args, model, cfg, model_dir: str) -> dict:
    ids = random_ids(1, args.check_len, cfg.vocab_size, args.seed + 1)[0].tolist()
    t0 = time.perf_counter()
    prefill_logits, hf_tokens, step_logits = hf_reference(model, cfg, ids, args.check_gen)
    res = {
        "prompt_ids": ids,
        "hf_tokens": hf_tokens,
        "hf_seconds": round(time.perf_counter() - t0, 3),
    }
    if args.dump_logits:
        prefill_logits.contiguous().numpy().astype("<f4").tofile(args.dump_logits)
        res["dumped_logits"] = {"file": args.dump_logits, "shape": list(prefill_logits.shape),
                                "dtype": "float32 little-endian, row-major [prompt_len, vocab]"}
    if args.no_emesh or not os.path.exists(args.emesh):
        res["emesh"] = "skipped" if args.no_emesh else f"not found: {args.emesh}"
        return res
    threads = ["--threads", str(args.threads)]
    # 1) greedy tokens from `emesh generate`
    gen, _ = run_json([args.emesh, "generate", "--model", model_dir, "--prompt-ids",
                       ",".join(map(str, ids)), "--max-tokens", str(args.check_gen)] + threads)
    res["emesh_tokens"] = gen["tokens"]
    res["tokens_equal"] = gen["tokens"] == hf_tokens
    if not res["tokens_equal"]:
        res["first_mismatch"] = next((i for i, (a, b) in enumerate(zip(gen["tokens"], hf_tokens)) if a != b),
                                     min(len(gen["tokens"]), len(hf_tokens)))
    # 2) logits via `emesh verify` on a one-prompt fixture folder holding HF's outputs
    files = checkpoint_files(model_dir)
    if len(files) != 1:
        res["emesh_logits"] = "skipped (multi-shard checkpoint)"
        return res
    with tempfile.TemporaryDirectory(prefix="hf-xcheck-") as tmp:
        os.symlink(os.path.abspath(os.path.join(model_dir, "config.json")), os.path.join(tmp, "config.json"))
        os.symlink(os.path.abspath(files[0]), os.path.join(tmp, "model.safetensors"))
        save_file({
            "prompt0.input_ids": torch.tensor([ids], dtype=torch.long),
            "prompt0.prefill_logits": prefill_logits.unsqueeze(0).contiguous(),
            "prompt0.gen_tokens": torch.tensor([hf_tokens], dtype=torch.long),
            "prompt0.gen_step_logits": step_logits.unsqueeze(0).contiguous(),
        }, os.path.join(tmp, "expected.safetensors"))
        rep, _ = run_json([args.emesh, "verify", tmp] + threads)
    ck = rep["checkpoints"][0]
    res["logits_max_abs_diff"] = {
        "prefill_all_positions": ck["prefill_max_abs_diff"],
        "decode_steps_teacher_forced": ck["decode_max_abs_diff"],
        "greedy_argmax_match_every_step": ck["greedy_tokens_match"],
    }
    res["logits_std"] = float(prefill_logits.std())
    return res


# ---------------------------------------------------------------------------
# Benchmarks
# ---------------------------------------------------------------------------

_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_NCPU = os.cpu_count() or 1


def _busy_seconds():
    """CPU seconds spent busy machine-wide (all cores), from /proc/stat; None where unavailable."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / _HZ


def _own_seconds():
    t = os.times()
    return t.user + t.system


class Timer:
    """Wall time of a block, plus how much CPU other processes (or the host, as steal) took
    meanwhile, in percent of the machine: a contended repeat shows up as others_pct > 0."""

    def __enter__(self):
        self.b0, self.o0, self.t0 = _busy_seconds(), _own_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        b1, o1 = _busy_seconds(), _own_seconds()
        self.others_pct = None
        if self.b0 is not None and b1 is not None and self.wall > 0:
            others = (b1 - self.b0) - (o1 - self.o0)
            self.others_pct = round(max(0.0, 100 * others / (self.wall * _NCPU)), 1)
        return False


def wait_idle(max_wait: float, threshold_pct: float = 10.0) -> float:
    """Waits (up to max_wait s) until the machine is nearly idle; returns the seconds waited."""
    if max_wait <= 0 or _busy_seconds() is None:
        return 0.0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait:
        b0, w0 = _busy_seconds(), time.perf_counter()
        time.sleep(0.5)
        if 100 * (_busy_seconds() - b0) / ((time.perf_counter() - w0) * _NCPU) < threshold_pct:
            break
    return time.perf_counter() - t0


CLEAN_PCT = 10.0


def timed_repeats(args, n: int, fn) -> dict:
    """Runs fn() until n repeats ran on a quiet machine (others_cpu_pct < CLEAN_PCT) or
    --max-attempts x n attempts were made; the median is over the quiet repeats when any."""
    times, others, waited = [], [], []
    for _ in range(max(n, n * args.max_attempts)):
        waited.append(round(wait_idle(args.wait_idle), 1))
        with Timer() as t:
            fn()
        times.append(t.wall)
        others.append(t.others_pct)
        if sum(1 for o in others if o is not None and o < CLEAN_PCT) >= n:
            break
    clean = [t for t, o in zip(times, others) if o is not None and o < CLEAN_PCT]
    use = clean if clean else times
    return {"attempts": len(times), "clean_repeats": len(clean), "seconds": [round(t, 4) for t in times],
            "others_cpu_pct": others, "waited_idle_s": waited,
            "median_s": statistics.median(use), "min_s": min(use)}


def bench_prefill(args, model, cfg) -> dict:
    ids = random_ids(1, args.prompt_len, cfg.vocab_size, args.seed)
    prefill(model, cfg, ids[:, : min(64, args.prompt_len)])  # warm-up (allocator, kernels)
    r = {"prompt_len": args.prompt_len,
         **timed_repeats(args, args.prefill_repeats, lambda: prefill(model, cfg, ids))}
    r["tokens_per_s"] = args.prompt_len / r["median_s"]
    r["best_tokens_per_s"] = args.prompt_len / r["min_s"]
    return r


def bench_decode(args, model, cfg, batch: int) -> dict:
    ctx = args.decode_context if args.decode_context is not None else args.prompt_len
    if args.batch_rows == "copies":
        ids = random_ids(1, ctx, cfg.vocab_size, args.seed).repeat(batch, 1)
    else:
        ids = random_ids(batch, ctx, cfg.vocab_size, args.seed + 100)
    with Timer() as t:
        logits, cache = prefill(model, cfg, ids)
    prefill_s = t.wall
    tok = logits[:, -1, :].argmax(-1, keepdim=True)
    for _ in range(args.decode_warmup):
        step, cache = decode_step(model, tok, cache)
        tok = step.argmax(-1, keepdim=True)
    # Repeats are consecutive windows of --decode-steps steps on the same sequences
    # (the context grows by decode_steps per repeat).
    state = {"tok": tok, "cache": cache}

    def window():
        for _ in range(args.decode_steps):
            step, state["cache"] = decode_step(model, state["tok"], state["cache"])
            state["tok"] = step.argmax(-1, keepdim=True)

    r = {"batch": batch, "context": ctx, "batch_rows": args.batch_rows, "steps": args.decode_steps,
         "warmup_steps": args.decode_warmup, **timed_repeats(args, args.decode_repeats, window)}
    r["tokens_per_s"] = batch * args.decode_steps / r["median_s"]
    r["best_tokens_per_s"] = batch * args.decode_steps / r["min_s"]
    r["ms_per_step"] = 1000 * r["median_s"] / args.decode_steps
    r["context_prefill_tokens_per_s"] = batch * ctx / prefill_s
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint folder (official DeepSeek layout)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--json", help="also write the JSON result here")
    ap.add_argument("--dump-logits", help="write HF's prefill logits of the cross-check prompt (raw LE f32)")
    ap.add_argument("--prefill-repeats", type=int, default=5)
    ap.add_argument("--decode-repeats", type=int, default=3)
    ap.add_argument("--decode-warmup", type=int, default=4)
    ap.add_argument("--decode-context", type=int, default=None,
                    help="prompt length before the timed decode (default: --prompt-len)")
    ap.add_argument("--batch-rows", choices=["distinct", "copies"], default="distinct",
                    help="decode batch rows: distinct random prompts, or copies of one prompt")
    ap.add_argument("--experts-impl", default="eager",
                    help="transformers experts implementation: eager (default), grouped_mm, batched_mm")
    ap.add_argument("--wait-idle", type=float, default=0.0,
                    help="before each timed repeat, wait up to this many seconds for other processes "
                         "to leave the machine idle (<10%% busy)")
    ap.add_argument("--max-attempts", type=int, default=1,
                    help="retry contended repeats (others_cpu_pct >= 10) up to this many times the repeat count")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--check-len", type=int, default=20)
    ap.add_argument("--check-gen", type=int, default=16)
    ap.add_argument("--no-check", action="store_true", help="skip the correctness cross-check")
    ap.add_argument("--no-bench", action="store_true", help="only run the cross-check")
    ap.add_argument("--emesh", default=DEFAULT_EMESH, help="emesh binary for the cross-check")
    ap.add_argument("--no-emesh", action="store_true", help="cross-check: do not run emesh")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]

    model, cfg, off, stats, load_s = build_model(args.model, args.experts_impl)
    quant = "fp8" if stats["fp8"] or stats["fp4"] else "f32"
    result = {
        "engine": "pytorch-transformers",
        "model": os.path.abspath(args.model),
        "checkpoint": quant,
        "weights_loaded": stats,
        "compute_dtype": "float32",
        "attn_implementation": "eager",
        "experts_implementation": model.config._experts_implementation,
        "threads": args.threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "layer_types": cfg.layer_types,
        "compress_rates": cfg.compress_rates,
        "load_seconds": round(load_s, 2),
    }
    log = lambda m: print(f"[bench_hf] {m}", file=sys.stderr, flush=True)
    log(f"loaded {args.model} ({quant}) in {load_s:.1f}s: {result['parameters']:,} parameters")

    if not args.no_check:
        xc = cross_check(args, model, cfg, args.model)
        result["crosscheck"] = xc
        log(f"cross-check: hf tokens {xc['hf_tokens']}")
        if "emesh_tokens" in xc:
            log(f"cross-check: emesh tokens {xc['emesh_tokens']} equal={xc['tokens_equal']} "
                f"logits {xc.get('logits_max_abs_diff')}")

    if not args.no_bench:
        result["prefill"] = bench_prefill(args, model, cfg)
        log(f"prefill {args.prompt_len}: {result['prefill']['tokens_per_s']:.1f} tok/s")
        result["decode"] = []
        for b in batches:
            d = bench_decode(args, model, cfg, b)
            result["decode"].append(d)
            log(f"decode batch {b}: {d['tokens_per_s']:.2f} tok/s ({d['ms_per_step']:.1f} ms/step)")

    line = json.dumps(result)
    print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
