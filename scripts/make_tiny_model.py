"""Makes the project's own tiny language model, offline, in a minute or two on two CPU cores.

The serving, optimize and end-to-end tests need a real model that vLLM serves and whose answers
can be checked. Nothing may come from a model hub, so this script makes one:

1. trains a byte-level BPE tokenizer on ``scripts/tiny_corpus.txt`` (``tokenizers``; special
   tokens ``<pad>``, ``<s>``, ``</s>``; a BOS is added to every encoded text);
2. trains a tiny ``LlamaForCausalLM`` (hidden 128, 2 heads of 64, 2 layers) on the corpus lines
   until it completes every probe correctly under greedy decoding, with a safety margin between
   the chosen token and the runner-up so that bf16 or int8 (W8A8) arithmetic picks the same one;
3. saves it with ``save_pretrained`` (safetensors) next to a ``PreTrainedTokenizerFast`` with a
   chat template, and writes ``probes.json``: the prompts, their exact greedy continuations and
   the ``max_tokens`` to ask for. The continuations are generated after training and compared
   with what the corpus says; a mismatch fails the script. The same probes as a scored suite
   (``suite.jsonl``) and the corpus lines as reference texts (``reference.jsonl``) for the
   gate's quality question go beside it; the copies below inherit all three.

``--scramble SRC --out DST`` copies a model with its weights permuted and noised (seeded): it loads
and serves like the original but gets the probes wrong, which proves that validation notices a
damaged model. Its ``probes.json`` is the original's (what a correct model answers).

``--retrain SRC --out DST`` writes what a scheduled retrain would produce: every weight moved by
5 % seeded noise, the same architecture and speed, still passing the probes (a good new model).
``--deepen SRC --out DST`` writes a measurably slower model that answers exactly like SRC: extra
decoder layers whose output projections are zero. Both serve the promotion-gate tests: the first
must be promoted over SRC, the second rolled back for speed.

Everything is seeded and single-order (fixed thread count, deterministic algorithms), so the
same inputs give the same weights. Runs in the vLLM venv (torch, transformers, tokenizers).

Usage::

    python scripts/make_tiny_model.py --out DIR
    python scripts/make_tiny_model.py --scramble SRC --out DST
    python scripts/make_tiny_model.py --retrain SRC --out DST
    python scripts/make_tiny_model.py --deepen SRC --out DST
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "tiny_corpus.txt"

SEED = 1234
THREADS = 2
VOCAB_SIZE = 640
PAD, BOS, EOS = "<pad>", "<s>", "</s>"

MODEL = {
    "hidden_size": 128,
    "num_attention_heads": 2,  # head_dim 64: vLLM's CPU attention rejects 16
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "intermediate_size": 384,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}

MAX_STEPS = 1500
MIN_STEPS = 300
CHECK_EVERY = 50
LEARNING_RATE = 3e-3
WARMUP_STEPS = 30
MIN_MARGIN = 3.0
"""Smallest logit gap between the greedy token and the runner-up on every probe step."""

PROBES: list[tuple[str, str]] = [
    ("The capital of France is", " Paris."),
    ("The capital of Japan is", " Tokyo."),
    ('{"status":', ' "ok"}'),
    ("one two three four five six", " seven eight nine ten."),
    ("Monday, Tuesday, Wednesday, Thursday,", " Friday, Saturday, Sunday."),
    ("the quick brown fox jumps", " over the lazy dog."),
    ("Water boils at", " 100 degrees Celsius."),
    ("1, 2, 3, 4, 5, 6,", " 7, 8, 9, 10."),
    ("user: What is the capital of France?\nassistant:", " Paris."),
]
"""Prompt and the corpus's continuation (which ends its line, so the model then emits EOS)."""

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)
"""Renders the ``user: ...``/``assistant: ...`` turns the corpus has (the last probe is one)."""


def log(message: str) -> None:
    """Prints one progress line to stderr."""
    print(f"[make_tiny_model] {message}", file=sys.stderr, flush=True)


def set_determinism() -> None:
    """Seeds everything and fixes the thread count so a rerun gives the same weights."""
    torch.manual_seed(SEED)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)


def corpus_lines(path: Path = CORPUS) -> list[str]:
    """The training texts: the corpus's non-empty lines, in order.

    An ``assistant:`` line is joined to the ``user:`` line before it (with a newline), so that a
    chat turn rendered by the chat template is continued with the answer.
    """
    texts: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("assistant:") and texts and texts[-1].startswith("user:") and "\n" not in texts[-1]:
            texts[-1] += "\n" + line
        else:
            texts.append(line)
    return texts


def train_tokenizer(lines: list[str]) -> PreTrainedTokenizerFast:
    """Trains a byte-level BPE tokenizer that adds ``<s>`` in front of every text.

    Args:
        lines: The training texts.

    Returns:
        A fast tokenizer with ``<pad>``/``<s>``/``</s>`` and the chat template set.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=256
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def encode(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    """Token ids of ``text`` as a server would see a prompt (with the BOS)."""
    ids = tokenizer(text)["input_ids"]
    if not ids or ids[0] != tokenizer.bos_token_id:
        raise SystemExit(f"the tokenizer did not add {BOS} to {text!r}: {ids}")
    return ids


def make_batch(tokenizer: PreTrainedTokenizerFast, lines: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole corpus as one padded batch: ``<s> line </s>``, loss on every real token."""
    seqs = [[*encode(tokenizer, line), tokenizer.eos_token_id] for line in lines]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


@torch.no_grad()
def greedy(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, prompt: str, max_tokens: int
) -> tuple[str, float]:
    """Greedy continuation of ``prompt`` (stops at EOS) and the smallest top-1/top-2 logit gap.

    Args:
        model: The model (eval mode is set here).
        tokenizer: Its tokenizer.
        prompt: The prompt text (a BOS is added, as a server does).
        max_tokens: The most tokens to generate.

    Returns:
        The decoded continuation without special tokens, and the smallest margin seen.
    """
    model.eval()
    ids = encode(tokenizer, prompt)
    out: list[int] = []
    margin = math.inf
    for _ in range(max_tokens):
        logits = model(torch.tensor([ids + out])).logits[0, -1].float()
        top = torch.topk(logits, 2)
        margin = min(margin, float(top.values[0] - top.values[1]))
        token = int(top.indices[0])
        if token == tokenizer.eos_token_id:
            break
        out.append(token)
    return tokenizer.decode(out, skip_special_tokens=True), margin


def probe_budget(tokenizer: PreTrainedTokenizerFast, expected: str) -> int:
    """``max_tokens`` for a probe: its continuation's tokens plus room for the EOS and spare."""
    return len(tokenizer(expected, add_special_tokens=False)["input_ids"]) + 4


def check_probes(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast
) -> tuple[list[dict[str, object]], list[str], float]:
    """Runs every probe; returns the probe records, the failures and the smallest margin."""
    records: list[dict[str, object]] = []
    failures: list[str] = []
    worst = math.inf
    for prompt, expected in PROBES:
        budget = probe_budget(tokenizer, expected)
        got, margin = greedy(model, tokenizer, prompt, budget)
        worst = min(worst, margin)
        if got != expected:
            failures.append(f"{prompt!r} -> {got!r} (expected {expected!r})")
        records.append({"prompt": prompt, "expected": got, "max_tokens": budget, "margin": round(margin, 2)})
    return records, failures, worst


def train(out: Path) -> None:
    """Trains the tokenizer and the model and writes them, with ``probes.json``, into ``out``."""
    started = time.monotonic()
    set_determinism()
    lines = corpus_lines()
    for prompt, expected in PROBES:
        if prompt + expected not in lines:
            raise SystemExit(f"probe {prompt!r} + {expected!r} is not a line of {CORPUS.name}")
        others = [line for line in lines if line.startswith(prompt) and line != prompt + expected]
        if others:
            raise SystemExit(f"probe {prompt!r} is ambiguous: {CORPUS.name} also has {others}")
    tokenizer = train_tokenizer(lines)
    ids, mask, labels = make_batch(tokenizer, lines)
    log(f"corpus: {len(lines)} lines, {int(mask.sum())} tokens; vocabulary {len(tokenizer)}")

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **MODEL,
    )
    model = LlamaForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    log(f"model: LlamaForCausalLM, {params / 1e6:.2f}M parameters, {MODEL}")

    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < WARMUP_STEPS:
            return (step + 1) / WARMUP_STEPS
        progress = (step - WARMUP_STEPS) / max(1, MAX_STEPS - WARMUP_STEPS)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    records: list[dict[str, object]] = []
    failures: list[str] = ["not trained yet"]
    worst = 0.0
    step = 0
    for step in range(1, MAX_STEPS + 1):
        model.train()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % CHECK_EVERY == 0:
            records, failures, worst = check_probes(model, tokenizer)
            log(
                f"step {step}: loss {loss.item():.4f}, probes {len(PROBES) - len(failures)}/{len(PROBES)}, "
                f"smallest margin {worst:.2f} ({time.monotonic() - started:.0f} s)"
            )
            if step >= MIN_STEPS and not failures and worst >= MIN_MARGIN:
                break
    if failures:
        raise SystemExit("the model did not learn its probes:\n  " + "\n  ".join(failures))
    if worst < MIN_MARGIN:
        raise SystemExit(f"the probes pass but with a logit margin of only {worst:.2f} (< {MIN_MARGIN})")

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    portable_tokenizer_config(tmp)
    (tmp / "probes.json").write_text(json.dumps(records, indent=2) + "\n")
    write_suite_and_references(tmp, records, lines)
    (tmp / "tiny_model.json").write_text(
        json.dumps(
            {
                "made_by": "scripts/make_tiny_model.py",
                "seed": SEED,
                "steps": step,
                "final_loss": round(loss.item(), 5),
                "smallest_probe_margin": round(worst, 3),
                "parameters": params,
                "corpus_lines": len(lines),
            },
            indent=2,
        )
        + "\n"
    )
    verify_saved(tmp, records)
    publish(tmp, out)
    log(f"saved to {out} after {step} steps in {time.monotonic() - started:.0f} s")


def write_suite_and_references(model_dir: Path, records: list[dict[str, object]], lines: list[str]) -> None:
    """Writes the model's scored suite and its reference texts beside ``probes.json``.

    ``suite.jsonl``: one scored probe per line (``name``, ``prompt``, ``exact``, ``max_tokens``),
    the format a team's suite has (``validation.suite_file``). ``reference.jsonl``: the corpus
    lines as ``{"text": ...}``, the model's own domain, for the gate's quality question
    (``validation.quality.texts``): on them the tiny model costs ~0.22 bits per byte and the
    scrambled copy ~4.4, while on general English the two do not separate.
    """
    with (model_dir / "suite.jsonl").open("w", encoding="utf-8") as fh:
        for i, r in enumerate(records):
            probe = {
                "name": f"tiny #{i + 1}",
                "prompt": r["prompt"],
                "exact": r["expected"],
                "max_tokens": r["max_tokens"],
            }
            fh.write(json.dumps(probe) + "\n")
    with (model_dir / "reference.jsonl").open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(json.dumps({"text": line}) + "\n")


def portable_tokenizer_config(model_dir: Path) -> None:
    """Names the tokenizer class ``PreTrainedTokenizerFast``, which transformers 4 and 5 both load.

    transformers 5 writes its own class name (``TokenizersBackend``), unknown to transformers 4,
    which other vLLM builds (an upstream server image) may bring.
    """
    path = model_dir / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    path.write_text(json.dumps(config, indent=2) + "\n")


def load(model_dir: Path) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Loads a saved model and tokenizer the way users do (``from_pretrained``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model, tokenizer


def run_probes(model_dir: Path, probes: list[dict[str, object]], dtype: torch.dtype = torch.float32) -> list[str]:
    """Generates every probe from the saved model, computing in ``dtype``; returns the mismatches."""
    model, tokenizer = load(model_dir)
    model = model.to(dtype)
    wrong = []
    for probe in probes:
        got, _ = greedy(model, tokenizer, str(probe["prompt"]), int(probe["max_tokens"]))
        if got != probe["expected"]:
            wrong.append(f"{probe['prompt']!r} -> {got!r} (expected {probe['expected']!r})")
    return wrong


def verify_saved(model_dir: Path, probes: list[dict[str, object]]) -> None:
    """Reloads the saved model with ``Auto*`` classes and checks every probe again.

    Twice: in float32, and in bfloat16, the dtype vLLM's CPU backend runs a float32 model in.
    """
    for dtype in (torch.float32, torch.bfloat16):
        wrong = run_probes(model_dir, probes, dtype)
        if wrong:
            raise SystemExit(f"the saved model at {model_dir} fails its probes in {dtype}:\n  " + "\n  ".join(wrong))
    log(f"reloaded from disk: {len(probes)}/{len(probes)} probes pass in float32 and bfloat16")


def publish(tmp: Path, out: Path) -> None:
    """Makes every file readable by all, then replaces ``out`` with ``tmp`` (a rename)."""
    for file in tmp.iterdir():
        file.chmod(0o644)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def scramble(src: Path, out: Path) -> None:
    """Writes a damaged copy of ``src``: same files and shapes, permuted and noised weights.

    The token embedding rows are permuted (every token now looks like another one) and every
    weight matrix gets seeded Gaussian noise of its own standard deviation. The copy must still
    load; it must get most probes wrong, else this fails.
    """
    from safetensors.torch import load_file, save_file

    set_determinism()
    probes = json.loads((src / "probes.json").read_text())
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(".stamp"))
    gen = torch.Generator().manual_seed(SEED + 1)
    for file in sorted(tmp.glob("*.safetensors")):
        tensors = load_file(file)
        for name, tensor in tensors.items():
            if tensor.ndim != 2 or not tensor.is_floating_point():
                continue
            if name.endswith("embed_tokens.weight"):
                tensor = tensor[torch.randperm(tensor.shape[0], generator=gen)]
            noise = torch.randn(tensor.shape, generator=gen, dtype=torch.float32) * tensor.float().std()
            tensors[name] = (tensor.float() + noise).to(tensor.dtype).contiguous()
        save_file(tensors, file, metadata={"format": "pt"})
    (tmp / "tiny_model.json").write_text(
        json.dumps({"made_by": "scripts/make_tiny_model.py --scramble", "source": str(src), "seed": SEED + 1}, indent=2)
        + "\n"
    )
    wrong = run_probes(tmp, probes)
    log(f"scrambled copy fails {len(wrong)}/{len(probes)} probes")
    if len(wrong) * 2 <= len(probes):
        raise SystemExit(f"the scrambled copy still passes {len(probes) - len(wrong)}/{len(probes)} probes")
    publish(tmp, out)
    log(f"saved to {out}")


def _copy_for_variant(src: Path, out: Path) -> Path:
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(".stamp"))
    return tmp


def retrain(src: Path, out: Path, scale: float = 0.05) -> None:
    """Writes a "retrained" copy of ``src``: same architecture, every weight moved by seeded noise.

    Each floating-point weight is multiplied by ``1 + scale * N(0, 1)`` element-wise: the model
    a scheduled retrain would produce - close to the old one, not identical, and no faster or
    slower. It must still pass the probes (it is a *good* new model), else this fails.
    """
    from safetensors.torch import load_file, save_file

    set_determinism()
    probes = json.loads((src / "probes.json").read_text())
    tmp = _copy_for_variant(src, out)
    gen = torch.Generator().manual_seed(SEED + 2)
    for file in sorted(tmp.glob("*.safetensors")):
        tensors = load_file(file)
        for name, tensor in tensors.items():
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=gen, dtype=torch.float32) * scale
                tensors[name] = (tensor.float() * (1.0 + noise)).to(tensor.dtype).contiguous()
        save_file(tensors, file, metadata={"format": "pt"})
    (tmp / "tiny_model.json").write_text(
        json.dumps({"made_by": "scripts/make_tiny_model.py --retrain", "source": str(src), "scale": scale}, indent=2)
        + "\n"
    )
    wrong = run_probes(tmp, probes)
    if wrong:
        raise SystemExit("the retrained copy fails probes:\n  " + "\n  ".join(wrong))
    publish(tmp, out)
    log(f"retrained copy (weights x (1 + {scale} N(0,1))) passes {len(probes)}/{len(probes)} probes; saved to {out}")


def deepen(src: Path, out: Path, extra_layers: int = 10) -> None:
    """Writes a slower copy of ``src`` that answers exactly like it: ``extra_layers`` more decoder layers.

    Each added layer copies the last one with its attention output (``o_proj``) and MLP output
    (``down_proj``) projections zeroed, so it adds nothing to the residual stream: the outputs are
    the same, the compute per token is ~(2 + extra_layers) / 2 times more. It must pass the probes.
    """
    from safetensors.torch import load_file, save_file

    set_determinism()
    probes = json.loads((src / "probes.json").read_text())
    tmp = _copy_for_variant(src, out)
    config = json.loads((tmp / "config.json").read_text())
    layers = int(config["num_hidden_layers"])
    files = sorted(tmp.glob("*.safetensors"))
    if len(files) != 1:
        raise SystemExit(f"--deepen expects one safetensors file, found {len(files)}")
    tensors = load_file(files[0])
    last = f"model.layers.{layers - 1}."
    template = {name[len(last) :]: t for name, t in tensors.items() if name.startswith(last)}
    for i in range(layers, layers + extra_layers):
        for suffix, tensor in template.items():
            zero = suffix.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight"))
            tensors[f"model.layers.{i}.{suffix}"] = (torch.zeros_like(tensor) if zero else tensor.clone()).contiguous()
    save_file(tensors, files[0], metadata={"format": "pt"})
    config["num_hidden_layers"] = layers + extra_layers
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (tmp / "tiny_model.json").write_text(
        json.dumps({"made_by": "scripts/make_tiny_model.py --deepen", "source": str(src), "extra_layers": extra_layers},
                   indent=2) + "\n"
    )  # fmt: skip
    wrong = run_probes(tmp, probes)
    if wrong:
        raise SystemExit("the deepened copy fails probes:\n  " + "\n  ".join(wrong))
    publish(tmp, out)
    log(f"deepened copy ({layers} + {extra_layers} layers, same outputs) passes its probes; saved to {out}")


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--out DIR`` trains; ``--scramble SRC --out DST`` damages a copy."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory (replaced)")
    parser.add_argument("--scramble", type=Path, metavar="SRC", help="write a damaged copy of SRC instead")
    parser.add_argument("--retrain", type=Path, metavar="SRC", help="write a retrained (noised) copy of SRC")
    parser.add_argument("--deepen", type=Path, metavar="SRC", help="write a slower, deeper copy of SRC")
    args = parser.parse_args(argv)
    out = args.out.expanduser().absolute()
    if args.scramble:
        scramble(args.scramble.expanduser().absolute(), out)
    elif args.retrain:
        retrain(args.retrain.expanduser().absolute(), out)
    elif args.deepen:
        deepen(args.deepen.expanduser().absolute(), out)
    else:
        train(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
