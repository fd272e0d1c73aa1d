"""Build the toy world's base model: a byte-level BPE tokenizer with role tokens and a chat
template, and a small Llama pretrained on the world's corpus, saved as a Hugging Face directory.

Everything downstream loads it with `AutoTokenizer`/`AutoModelForCausalLM.from_pretrained`, so
the toy world exercises exactly the code paths a real model does. Builds are cached under
`$HARNESS_CACHE/toy/<size>-<recipe hash>`; the hash covers the recipe's settings and source code,
so any change to the recipe rebuilds, and an unchanged recipe is a cache hit.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.models.toy import world as world_mod
from harness.util.errors import HarnessError

BOS, EOS, PAD = "<s>", "<|end|>", "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS)

# Assistant content and its end-of-turn marker sit inside {% generation %} tags, so TRL-style
# `return_assistant_tokens_mask` works; our own masking does not rely on the tags.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\\n' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ToyRecipe:
    """Model and pretraining settings of one toy size."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    block_size: int
    batch_size: int
    steps: int
    learning_rate: float
    warmup_steps: int
    n_pretrain_docs: int
    seed: int = 0


SIZES: dict[str, ToyRecipe] = {
    "tiny": ToyRecipe(
        vocab_size=768,
        hidden_size=64,
        intermediate_size=192,
        num_layers=2,
        num_heads=4,
        block_size=96,
        batch_size=32,
        steps=800,
        learning_rate=4e-3,
        warmup_steps=20,
        n_pretrain_docs=6000,
    ),
    "demo": ToyRecipe(
        vocab_size=1024,
        hidden_size=96,
        intermediate_size=288,
        num_layers=3,
        num_heads=4,
        block_size=128,
        batch_size=32,
        steps=2400,
        learning_rate=3e-3,
        warmup_steps=60,
        n_pretrain_docs=12000,
    ),
}


@dataclass(frozen=True)
class ToyWorld:
    """A built toy world on disk: `model_dir` is a Hugging Face model directory."""

    path: Path

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text())


def cache_root() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "sft-harness"))


def recipe_hash(size: str) -> str:
    """Hash of what shapes the weights: the recipe's settings, the world's source, the source of
    the functions that train the tokenizer and the model, and the library versions. Other edits
    to this module (messages, checks) do not rebuild."""
    import inspect

    import tokenizers
    import torch
    import transformers

    h = hashlib.sha256(json.dumps(asdict(SIZES[size]), sort_keys=True).encode())
    h.update(Path(world_mod.__file__).read_bytes())
    for fn in (_build, _read_texts, train_tokenizer, _pretraining_rows, _pretrain):
        h.update(inspect.getsource(fn).encode())
    h.update(f"{torch.__version__}|{transformers.__version__}|{tokenizers.__version__}".encode())
    return h.hexdigest()[:12]


def weights_sha256(world: ToyWorld) -> str:
    """sha256 of the model's weight file: equal on two machines means the same toy world."""
    return hashlib.sha256((world.model_dir / "model.safetensors").read_bytes()).hexdigest()


# Weights of reference builds (the machine docs/results.md was measured on), by recipe hash. A
# build that differs gets a warning: its figures then differ from the docs by seed-level noise.
REFERENCE_FILE = Path(__file__).with_name("reference_builds.json")


def check_reference(world: ToyWorld) -> str | None:
    """A one-line warning when a reference build of this recipe exists and these weights differ."""
    refs = json.loads(REFERENCE_FILE.read_text()) if REFERENCE_FILE.is_file() else {}
    m = world.manifest
    ref = refs.get(m["recipe_hash"])
    if ref is None or ref["weights_sha256"] == m["weights_sha256"]:
        return None
    return (
        f"warning: toy world {m['size']} differs from the reference build ({ref['machine']}): "
        f"weights {m['weights_sha256'][:12]} vs {ref['weights_sha256'][:12]}; figures will "
        "differ from docs/results.md by seed-level noise"
    )


def find_toy_world(size: str = "demo") -> ToyWorld | None:
    """The cached toy world of this size and recipe, or None if it was never built."""
    path = cache_root() / "toy" / f"{size}-{recipe_hash(size)}"
    return ToyWorld(path) if _intact(path) else None


def _intact(path: Path) -> bool:
    """A finished build whose weights are the ones its manifest recorded (a truncated or
    edited weight file is rebuilt, not trusted)."""
    if not (path / "manifest.json").exists():
        return False
    world = ToyWorld(path)
    return world.manifest.get("weights_sha256") == weights_sha256(world)


def build_toy_world(
    size: str = "demo", out: str | Path | None = None, force: bool = False, verbose: bool = True
) -> ToyWorld:
    """Return the toy world of `size`, building it first unless a cached build exists (a fresh
    build prints its summary when `verbose`)."""
    if size not in SIZES:
        raise HarnessError(f"toy size {size!r} is unknown; choose one of {', '.join(SIZES)}")
    target = Path(out) if out else cache_root() / "toy" / f"{size}-{recipe_hash(size)}"
    if _intact(target) and not force:
        return ToyWorld(target)
    if target.exists() and not _replaceable(target):
        raise HarnessError(
            f"--out {target}: exists and is not a toy world build; "
            "choose a new or empty folder (nothing was deleted)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _build(size, tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)  # atomic: readers see a whole world or none
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    world = ToyWorld(target)
    if verbose:
        print(summary(world))
        warning = check_reference(world)
        if warning:
            print(warning)
    return world


def _replaceable(path: Path) -> bool:
    """A rebuild may replace an empty folder or an earlier toy build (its manifest names a
    recipe), never anything else: `--out .` must not wipe a working directory."""
    if not path.is_dir():
        return False
    if not any(path.iterdir()):
        return True
    try:
        return "recipe_hash" in json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False


def summary(world: ToyWorld) -> str:
    m = world.manifest
    return (
        f"toy world ({m['size']}, built in {m['build_seconds']:.0f}s): "
        f"{m['parameters'] / 1e6:.2f}M parameters, base-knowledge probes "
        f"{m['probe_accuracy']:.1%} ({m['probe_correct']}/{m['probe_total']}), weights sha256 "
        f"{m['weights_sha256'][:12]} -> {world.path}"
    )


# ---------------------------------------------------------------- the build itself


def _build(size: str, out: Path) -> None:
    import torch

    recipe = SIZES[size]
    start = time.time()
    print(f"building toy world ({size}) -> {out.parent}", flush=True)
    counts = world_mod.write_world_data(out / "data", n_pretrain_docs=recipe.n_pretrain_docs)
    texts = _read_texts(out / "data")
    tokenizer = train_tokenizer(texts, recipe.vocab_size)
    torch.manual_seed(recipe.seed)
    model = _pretrain(tokenizer, out / "data" / "pretrain.jsonl", recipe)
    model_dir = out / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    correct, total = probe_accuracy(model, tokenizer, out / "data" / "eval" / "forgetting.jsonl")
    manifest = {
        "size": size,
        "recipe": asdict(recipe),
        "recipe_hash": recipe_hash(size),
        "rows": counts,
        "parameters": sum(p.numel() for p in model.parameters()),
        "probe_correct": correct,
        "probe_total": total,
        "probe_accuracy": correct / total,
        "build_seconds": time.time() - start,
        "weights_sha256": hashlib.sha256(
            (model_dir / "model.safetensors").read_bytes()
        ).hexdigest(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _read_texts(data_dir: Path) -> list[str]:
    """All text the tokenizer should compress well: the corpus and every SFT message."""
    texts: list[str] = []
    for path in sorted(data_dir.rglob("*.jsonl")):
        if path.parts[-2] == "eval":
            continue
        for line in path.read_text().splitlines():
            row = json.loads(line)
            texts += [row["text"]] if "text" in row else [m["content"] for m in row["messages"]]
    return texts


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE (any text round-trips) with role tokens and the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=512,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _pretraining_rows(tokenizer, corpus: Path, block_size: int) -> list[list[int]]:
    """Greedily fill rows with whole documents (each ending in EOS); every row starts a document."""
    rows: list[list[int]] = []
    row: list[int] = []
    for line in corpus.read_text().splitlines():
        ids = tokenizer(json.loads(line)["text"], add_special_tokens=False)["input_ids"]
        ids = ids[: block_size - 1] + [tokenizer.eos_token_id]
        if len(row) + len(ids) > block_size:
            rows.append(row)
            row = []
        row += ids
    if row:
        rows.append(row)
    return rows


def _pretrain(tokenizer, corpus: Path, recipe: ToyRecipe):
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        do_sample=False,
    )
    rows = _pretraining_rows(tokenizer, corpus, recipe.block_size)
    rng = random.Random(recipe.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    order: list[int] = []
    bar = tqdm(range(recipe.steps), desc="pretraining toy model", unit="step", leave=False)
    for _ in bar:
        if len(order) < recipe.batch_size:
            more = list(range(len(rows)))
            rng.shuffle(more)
            order += more
        batch = [rows[i] for i in order[: recipe.batch_size]]
        del order[: recipe.batch_size]
        width = max(len(r) for r in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return model


def probe_accuracy(model, tokenizer, probes: Path) -> tuple[int, int]:
    """Multiple-choice accuracy by summed log-likelihood of each choice (as lm-eval scores `acc`)."""
    import torch

    items = [json.loads(line) for line in probes.read_text().splitlines()]
    correct = 0
    with torch.no_grad():
        for item in items:
            ctx = tokenizer(item["context"], add_special_tokens=False)["input_ids"]
            scores = []
            for choice in item["choices"]:
                whole = tokenizer(item["context"] + choice, add_special_tokens=False)["input_ids"]
                cont = whole[len(ctx) :]
                logits = model(input_ids=torch.tensor([whole])).logits[0, :-1]
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                positions = range(len(whole) - len(cont) - 1, len(whole) - 1)
                scores.append(
                    sum(logprobs[p, t].item() for p, t in zip(positions, cont, strict=True))
                )
            correct += int(max(range(len(scores)), key=scores.__getitem__) == item["gold"])
    return correct, len(items)
