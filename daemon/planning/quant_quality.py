"""What quantization costs in quality, by quant type and model size.

Measured anchor (a ~8B model): llama.cpp's perplexity table for LLaMA-3-8B, wikitext, no
imatrix (PR #6936, now in tools/perplexity/README.md): ΔPPL Q8_0 +0.04 %, Q6_K +0.35 %,
Q5_K_M +0.91 %, Q5_K_S +1.7 %; IQ4_XS +3.7 % (PR #12557); Q2_K ≈ +11.7 % and IQ3_XXS
≈ +6.1 % (Mistral-7B, PR #5676). Rows the stored copy cut off (Q4_K_M, Q4_0, Q3_K) are the
usual values between them and are estimates.

Size: smaller models lose more at the same bits (locobench's quality notes; a Jetson study of
Llama-3.2-1B/3B and Qwen2.5-1.5B/3B), large dense and MoE models less (Qwen3.5-35B-A3B KLD
sweeps: good Q4 recipes at mean KLD ≈ 0.01). The anchor delta is scaled by (8B / size)^0.4,
bounded to 0.4…3: ×2.3 at 1B, ×0.6 at 30B. A model's score is multiplied by the retained
share, 1 − 1.5 × scaled ΔPPL.

Hard rules, as an expert applies them (llama.vscode ships its ≤7B FIM models as Q8_0 only; the
quant research for issue #12): a model of ≤3.5B runs at 6+ bits (Q6_K, Q8_0), one under 8B at
4+ bits; below that take the next smaller model. A rule applies only when the model lists a
quant that meets it (a catalog offering one small quant keeps it).
"""

from __future__ import annotations

from assistantd.planning.estimate import BITS_PER_WEIGHT

# ΔPPL (%) on an ~8B model.
PPL_DELTA_8B = {
    "F16": 0.0,
    "BF16": 0.0,
    "Q8_0": 0.04,
    "Q6_K": 0.35,
    "Q5_K_M": 0.91,
    "Q5_K_S": 1.7,
    "Q5_1": 1.2,
    "Q5_0": 1.5,
    "Q4_K_M": 2.1,
    "Q4_K_S": 2.8,
    "Q4_1": 3.5,
    "Q4_0": 4.0,
    "IQ4_XS": 3.7,
    "IQ4_NL": 3.5,
    "MXFP4": 0.0,  # gpt-oss was trained for MXFP4 experts: its published scores are MXFP4's
    "Q3_K_L": 4.5,
    "Q3_K_M": 5.5,
    "IQ3_M": 5.5,
    "Q3_K_S": 8.0,
    "IQ3_XXS": 6.1,
    "Q2_K": 11.7,
    "IQ2_M": 15.0,
    "IQ2_XS": 22.0,
}
RELATIVE_LOSS_PER_PPL_PERCENT = 1.5  # % of benchmark score lost per % of perplexity added
# (model size below, least bits per weight)
MIN_BITS = ((3.5e9, 6.5), (8e9, 4.0))


def size_factor(n_params: int) -> float:
    return min(max((8e9 / max(n_params, 1)) ** 0.4, 0.4), 3.0)


def retained(quant: str, n_params: int) -> float:
    """Share of the full-precision score kept at this quant (0…1)."""
    delta = PPL_DELTA_8B.get(quant.upper(), 8.0) * size_factor(n_params)
    return max(1.0 - RELATIVE_LOSS_PER_PPL_PERCENT * delta / 100, 0.05)


def quant_quality(quality: float, quant: str, n_params: int) -> float:
    return round(quality * retained(quant, n_params), 2)


def too_lossy(quant: str, n_params: int, offered: tuple[str, ...] = ()) -> str | None:
    """Why an expert would not run this quant on this model, or None. `offered`: the model's
    quants; a rule no offered quant meets does not apply."""
    bits = BITS_PER_WEIGHT.get(quant.upper(), 16.0)
    for below, least in MIN_BITS:
        if n_params <= below:
            if bits >= least or not any(BITS_PER_WEIGHT.get(q, 0) >= least for q in offered):
                return None
            return (
                f"{quant} loses too much on a {n_params / 1e9:.1f}B model "
                f"(it needs {least:g}+ bits; a smaller model at those is better)"
            )
    return None
