"""Tasks with checkable answers as conversations, and their exact-match score through a chat model.

    python bench/chat_tasks.py make OUT_DIR [--seed 0] [--train 4000] [--held-out 300] [--max-letters 6] [--turns 1]
    python bench/chat_tasks.py score OUT_DIR/held_out.jsonl --url http://127.0.0.1:8000 [--model NAME]
    python bench/chat_tasks.py score OUT_DIR/held_out.jsonl --checkpoint CHECKPOINT
    python bench/chat_tasks.py --smoke

`make` writes OUT_DIR/train.jsonl and OUT_DIR/held_out.jsonl, rows {"messages": [{"role": "user", ...},
{"role": "assistant", ...}], "task": NAME} (`cli.py train` reads the messages and ignores "task"), --train
questions per task in train.jsonl and --held-out per task in held_out.jsonl, each task's user turn in one of a
few phrasings. --turns K puts K question/answer turns (of mixed tasks) in each train conversation, "task" their
names joined by commas: the assistant mask covers every answer, so one training window trains K answers instead
of one answer and padding. Held-out rows stay one question each, a fresh conversation as the endpoint gets it.
The tasks:
    add       two numbers of 10..99:             "What is 37+48?" -> "85"
    compare   the larger of two numbers 10..99:   "Which is larger, 37 or 48?" -> "48"
    reverse   a word backwards:                   "Reverse 'night'." -> "thgin"
    spell     a word letter by letter:            "Spell 'night'." -> "n-i-g-h-t"
    count     a letter's occurrences in a word:   "How many 'e' in 'cheese'?" -> "3"
The words are data/tinyshakespeare.txt's lowercase words of 3 to --max-letters (6) letters; the number
pairs are the unordered pairs of distinct numbers 10..99. A seeded shuffle reserves --held-out words and
--held-out number pairs for the held-out split: no held-out word appears in any train row, and no held-out
pair in either order, so every held-out prompt's input is unseen in training (the train rows draw from the
rest, with repeats when --train is larger than the rest).

`score` asks the model each held-out user turn, greedily (temperature 0), and counts exact matches per task:
answer and reference compared after normalize() (surrounding whitespace dropped, inner runs of whitespace
made one space, one trailing period dropped; case kept). --url posts to a running `cli.py serve`'s
POST /v1/chat/completions and reads choices[0].message.content; --checkpoint answers in this process as that
endpoint does: the conversation rendered by the tokenizer's chat template with the generation prompt,
decoded greedily until <|im_end|> (or --max-tokens). It prints a table and one JSON line:
    {"bench": "chat_tasks", "smoke": bool, "source": URL or checkpoint, "tasks": {NAME: {"n", "correct",
     "exact_match"}}, "seconds"}
  --smoke: `make` 3 rows per task into a temporary folder and score them with an untrained 1-layer model
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # cllm and bench.common of this checkout, as a script run from anywhere

from bench.common import SMOKE_HELP  # noqa: E402
from cllm.chat.template import CHATML_TOKENS, add_chat_tokens, apply_chat_template  # noqa: E402
from cllm.errors import CLLMError  # noqa: E402

CORPUS = os.path.join(ROOT, "data", "tinyshakespeare.txt")
NUMBERS = range(10, 100)
TASKS = ("add", "compare", "reverse", "spell", "count")
PHRASINGS = {  # short: a window holds one whole conversation, so the longest one sets --seq-len
    "add": ["What is {a}+{b}?", "{a} + {b} = ?", "Add {a} and {b}."],
    "compare": ["Which is larger, {a} or {b}?", "Max of {a} and {b}?", "Bigger: {a} or {b}?"],
    "reverse": ["Reverse '{w}'.", "Write '{w}' backwards.", "'{w}' reversed?"],
    "spell": ["Spell '{w}'.", "Spell out '{w}'.", "Letters of '{w}'?"],
    "count": ["Count '{c}' in '{w}'.", "How many '{c}' in '{w}'?", "Number of '{c}' in '{w}'?"],
}


def answer(task: str, inp: tuple) -> str:
    """The reference answer of `task` for its input: (a, b) numbers or (word,) or (letter, word)."""
    if task == "add":
        return str(inp[0] + inp[1])
    if task == "compare":
        return str(max(inp))
    if task == "reverse":
        return inp[0][::-1]
    if task == "spell":
        return "-".join(inp[0])
    if task == "count":
        return str(inp[1].count(inp[0]))
    raise ValueError(f"unknown task {task!r}")


def corpus_words(max_letters: int = 6, path: str = CORPUS) -> list[str]:
    """The distinct lowercase words of 3 to max_letters letters in the corpus, sorted."""
    with open(path, encoding="utf-8") as f:
        return sorted(set(re.findall(r"\b[a-z]{3,%d}\b" % max_letters, f.read())))


def split_inputs(seed: int, held_out: int, words: list[str]) -> dict:
    """{"train": (words, pairs), "held_out": (words, pairs)}: a seeded shuffle puts `held_out` words and `held_out`
    unordered number pairs (a < b) aside; the rest are train's."""
    rng = random.Random(seed)
    words = list(words)
    pairs = [(a, b) for a in NUMBERS for b in NUMBERS if a < b]
    rng.shuffle(words)
    rng.shuffle(pairs)
    if held_out >= min(len(words), len(pairs)) // 2:
        raise SystemExit(f"error: --held-out {held_out} is too many: at most {min(len(words), len(pairs)) // 2 - 1} "
                         "words and number pairs can be held out with as many left for training")
    return {"held_out": (words[:held_out], pairs[:held_out]), "train": (words[held_out:], pairs[held_out:])}


def task_inputs(task: str, words: list[str], pairs: list[tuple], n: int, rng: random.Random, distinct: bool):
    """n inputs of `task` from these words or pairs: each once in a shuffled order when `distinct` (held-out:
    n equals their number), else drawn with repeats. A pair is shown in either order; count asks for a letter
    of the word three times in four, else for a letter it lacks (answer 0)."""
    pool = pairs if task in ("add", "compare") else words
    chosen = rng.sample(pool, n) if distinct else [rng.choice(pool) for _ in range(n)]
    out = []
    for item in chosen:
        if task in ("add", "compare"):
            out.append(item if rng.random() < 0.5 else item[::-1])
        elif task == "count":
            absent = [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in item]
            letter = rng.choice(item) if rng.random() < 0.75 or not absent else rng.choice(absent)
            out.append((letter, item))
        else:
            out.append((item,))
    return out


def prompt(task: str, inp: tuple, rng: random.Random) -> str:
    fields = {"a": inp[0], "b": inp[1]} if task in ("add", "compare") else (
        {"c": inp[0], "w": inp[1]} if task == "count" else {"w": inp[0]})
    return rng.choice(PHRASINGS[task]).format(**fields)


def make_rows(seed: int, n_train: int, n_held_out: int, words: list[str] | None = None,
              max_letters: int = 6, turns: int = 1) -> dict[str, list[dict]]:
    """{"train": rows, "held_out": rows} (the module doc), shuffled, deterministic for a seed; `words` (default:
    the corpus's of 3 to max_letters letters) are those of the word tasks; `turns` questions per train row."""
    split = split_inputs(seed, n_held_out, corpus_words(max_letters) if words is None else words)
    rng = random.Random(seed + 1)
    out = {}
    for name, n in (("train", n_train), ("held_out", n_held_out)):
        pool_words, pool_pairs = split[name]
        rows = []
        for task in TASKS:
            for inp in task_inputs(task, pool_words, pool_pairs, n, rng, distinct=name == "held_out"):
                rows.append({"messages": [{"role": "user", "content": prompt(task, inp, rng)},
                                          {"role": "assistant", "content": answer(task, inp)}], "task": task})
        rng.shuffle(rows)
        out[name] = join_turns(rows, turns) if name == "train" else rows
    return out


def join_turns(rows: list[dict], turns: int) -> list[dict]:
    """The single-question rows, in order, as conversations of `turns` question/answer pairs (the last may
    hold fewer), "task" the turns' task names joined by commas."""
    if turns == 1:
        return rows
    return [{"messages": [m for r in group for m in r["messages"]], "task": ",".join(r["task"] for r in group)}
            for group in (rows[i:i + turns] for i in range(0, len(rows), turns))]


def conversation_tokens(row: dict) -> int:
    """The row's length in a char tokenizer's ids once rendered by the ChatML template (cllm/chat/template.py):
    per message <|im_start|> (1 id), the role, a newline, the content, <|im_end|> (1 id) and a newline;
    --seq-len must be one less than the longest for no window to cut an answer."""
    return sum(len(m["role"]) + len(m["content"]) + 4 for m in row["messages"])


def make(out_dir: str, seed: int, n_train: int, n_held_out: int, words=None, max_letters: int = 6,
         turns: int = 1) -> dict[str, str]:
    rows = make_rows(seed, n_train, n_held_out, words, max_letters, turns)
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for name, split_rows in rows.items():
        paths[name] = os.path.join(out_dir, f"{name}.jsonl")
        with open(paths[name], "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in split_rows)
    return paths


# ------------------------------------------------------------------------------ scoring
def normalize(text: str) -> str:
    """What exact match compares: surrounding whitespace dropped, inner whitespace runs one space, one trailing
    period dropped ("85." and " 85\\n" match "85"); case is kept."""
    text = " ".join(text.split())
    return text[:-1].rstrip() if text.endswith(".") else text


def exact_match(got: str, expected: str) -> bool:
    return normalize(got) == normalize(expected)


def read_rows(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                user, reply = row["messages"][0]["content"], row["messages"][-1]["content"]
                rows.append({"task": row.get("task", "all"), "user": user, "expected": reply})
            except (ValueError, KeyError, IndexError, TypeError):
                raise SystemExit(f"error: {path}:{n} is not a row of `make` "
                                 '({"messages": [user, assistant], "task": ...})') from None
    if not rows:
        raise SystemExit(f"error: {path} has no rows")
    return rows


def url_answerer(url: str, model: str | None, max_tokens: int, timeout: float = 120.0):
    """ask(user text) -> the reply of POST URL/v1/chat/completions, greedy."""
    endpoint = url.rstrip("/") + "/v1/chat/completions"

    def ask(user: str) -> str:
        body = {"messages": [{"role": "user", "content": user}], "temperature": 0, "max_tokens": max_tokens}
        if model:
            body["model"] = model
        request = urllib.request.Request(endpoint, json.dumps(body).encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                reply = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise SystemExit(f"error: {endpoint} answered {exc.code}: {exc.read()[:500]!r}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise SystemExit(f"error: cannot reach {endpoint} ({exc}); is `cli.py serve` running there?") from None
        try:
            return reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise SystemExit(f"error: {endpoint} answered without choices[0].message.content: "
                             f"{json.dumps(reply)[:300]}") from None
    return ask


def model_answerer(model, tok, max_tokens: int):
    """ask(user text) -> the model's greedy reply: the chat template's rendering with the generation prompt,
    decoded until <|im_end|> (as POST /v1/chat/completions answers)."""
    # costly at start-up: Numba and the kernels, needed only when a model answers in this process
    from cllm.generation import Generator, SamplingConfig  # noqa: PLC0415

    end = (getattr(tok, "special_tokens", None) or {}).get(CHATML_TOKENS[1])
    generator = Generator(model, eos_id=end if end is not None else tok.eos_id)

    def ask(user: str) -> str:
        ids = apply_chat_template(tok, [{"role": "user", "content": user}], add_generation_prompt=True)
        out = list(generator.stream(ids, SamplingConfig(max_new_tokens=max_tokens, temperature=0.0)))
        return tok.decode(out)
    return ask


def score(rows: list[dict], ask, show: int = 0) -> dict:
    """{task: {"n", "correct", "exact_match"}} of ask's replies to the rows; prints up to `show` misses."""
    tasks = {}
    shown = 0
    for r in rows:
        got = ask(r["user"])
        ok = exact_match(got, r["expected"])
        t = tasks.setdefault(r["task"], {"n": 0, "correct": 0})
        t["n"] += 1
        t["correct"] += ok
        if not ok and shown < show:
            shown += 1
            print(f"  miss [{r['task']}] {r['user']!r}: got {got!r}, expected {r['expected']!r}", file=sys.stderr)
    for t in tasks.values():
        t["exact_match"] = round(t["correct"] / t["n"], 4)
    return dict(sorted(tasks.items()))


def table(tasks: dict) -> str:
    lines = ["| task | held-out N | exact match |", "|---|---|---|"]
    lines += [f"| {name} | {t['n']} | {100 * t['exact_match']:.1f}% ({t['correct']}/{t['n']}) |"
              for name, t in tasks.items()]
    return "\n".join(lines)


def smoke() -> dict:
    """make 3 rows per task, then score them with an untrained 1-layer model on a char tokenizer with chat tokens."""
    from cllm.config import ModelConfig  # noqa: PLC0415 (costly: Numba, as in model_answerer)
    from cllm.model import Model  # noqa: PLC0415
    from cllm.tokenizers import train_tokenizer  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        words = [f"{a}{b}{c}" for a in "abc" for b in "def" for c in "ghi"]
        paths = make(tmp, 0, 3, 3, words=words)
        rows = read_rows(paths["held_out"])
    tok = add_chat_tokens(train_tokenizer("char", "abc", progress=False))
    model = Model(ModelConfig(vocab_size=tok.vocab_size, max_seq_len=96, num_layers=1, num_heads=2, embed_dim=32))
    return score(rows, model_answerer(model, tok, max_tokens=4))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    sub = p.add_subparsers(dest="action")
    m = sub.add_parser("make", help="write OUT_DIR/train.jsonl and OUT_DIR/held_out.jsonl")
    m.add_argument("out_dir")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--train", type=int, default=4000, help="train questions per task")
    m.add_argument("--held-out", type=int, default=300, help="held-out rows per task")
    m.add_argument("--max-letters", type=int, default=6, help="the longest word of the word tasks (3 at least)")
    m.add_argument("--turns", type=int, default=1, help="question/answer turns per train conversation")
    s = sub.add_parser("score", help="exact match per task of a chat model's replies to held-out rows")
    s.add_argument("held_out", help="held_out.jsonl of `make`")
    how = s.add_mutually_exclusive_group(required=True)
    how.add_argument("--url", help="a running `cli.py serve` (POST URL/v1/chat/completions)")
    how.add_argument("--checkpoint", help="a checkpoint answered in this process, as the endpoint answers")
    s.add_argument("--model", help="the request's \"model\" field (--url)")
    s.add_argument("--max-tokens", type=int, default=32, help="the longest reply, in tokens")
    s.add_argument("--limit", type=int, default=0, help="score the first N rows only (0: all)")
    s.add_argument("--show", type=int, default=0, help="print up to N wrong answers")
    s.add_argument("--threads", type=int, default=None, help="--checkpoint: Numba threads")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.smoke:
        tasks, source = smoke(), "untrained"
    elif args.action == "make":
        if args.train < 1 or args.held_out < 1 or args.max_letters < 3 or args.turns < 1:
            p.error("--train, --held-out and --turns must be at least 1, --max-letters at least 3")
        for name, path in make(args.out_dir, args.seed, args.train, args.held_out, max_letters=args.max_letters,
                               turns=args.turns).items():
            rows = [json.loads(line) for line in open(path, encoding="utf-8")]
            longest = max(conversation_tokens(r) for r in rows)
            print(f"{path}: {args.train if name == 'train' else args.held_out} questions per task, {len(TASKS)} "
                  f"tasks, {len(rows)} conversations, the longest {longest} char-tokenizer ids")
        return 0
    elif args.action == "score":
        rows = read_rows(args.held_out)
        rows = rows[:args.limit] if args.limit > 0 else rows
        if args.url:
            ask, source = url_answerer(args.url, args.model, args.max_tokens), args.url
        else:
            from cllm.completion import load_for_generation  # noqa: PLC0415 (costly: Numba)

            try:
                model, tok, source = load_for_generation(args.checkpoint, threads=args.threads)
                ask = model_answerer(model, tok, args.max_tokens)
                ask(rows[0]["user"])  # a tokenizer without a chat template fails here, once
            except CLLMError as exc:
                raise SystemExit(f"error: {exc}") from None
        tasks = score(rows, ask, args.show)
        print(table(tasks))
    else:
        p.error("give an action: make or score (or --smoke)")
    print(json.dumps({"bench": "chat_tasks", "smoke": bool(args.smoke), "source": source, "tasks": tasks,
                      "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
