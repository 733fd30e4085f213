"""Conversation, preference and prompt data for SFT, reward modelling, DPO and RL, with exact-resume batches.

Formats follow TRL: `{"messages": [...]}` or `{"prompt": ..., "completion": ...}` for SFT; for preferences
`{"prompt": str | messages, "chosen": str, "rejected": str}`, TRL's conversational form with an explicit prompt
(`{"prompt": messages, "chosen": [assistant message], "rejected": [assistant message]}`) or with an implicit one
(`{"chosen": messages, "rejected": messages}`: the prompt is the messages both share from the start, and each
side then ends in one assistant message); `{"prompt": str | messages, ...}` for RL prompts (extra fields, e.g. a
`reference` answer, go to the reward function). An optional `"split": "train" | "val"` field pins a record's
split; otherwise about 1 in 20 records (by a hash of the content) is held out for validation.

Sources: what `pretrain --data` accepts except plain text. A local .jsonl file is read line by line with `json`
so that a malformed record is reported with its file and line number, which is what a user needs to fix it;
.json, .parquet and .csv files and Hub dataset ids load through `datasets` (sources.TextSource.rows), and a
source's own validation split, when it has one, is the val split. Each record is rendered once with the chat
template; batches are drawn from the rendered rows by `RowBatches`, an epoch-shuffling iterator whose generator
state and position make up its whole state (exact resume, like `TokenWindows`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from .jsonl import read_jsonl
from .chat_format import prompt_messages, render_completion, render_conversation, render_prompt, validate_messages
from ..common import MinigptError, print0

VAL_ONE_IN = 20


def conversation_of(record: dict, where: str) -> list[dict[str, str]]:
    """A messages list from either `messages` or `prompt` + `completion`."""
    if "messages" in record:
        return validate_messages(record["messages"], where)
    if "prompt" in record and "completion" in record:
        if not isinstance(record["completion"], str):
            raise MinigptError(f"{where}: 'completion' must be a string")
        return prompt_messages(record["prompt"], where) + [{"role": "assistant", "content": record["completion"]}]
    raise MinigptError(f"{where}: needs 'messages', or 'prompt' and 'completion'")


def preference_of(record: dict, where: str) -> tuple[list[dict[str, str]], str, str]:
    """(prompt messages, chosen reply, rejected reply) from any of the three preference forms."""
    missing = [k for k in ("chosen", "rejected") if k not in record]
    if missing:
        raise MinigptError(f"{where}: missing {', '.join(repr(m) for m in missing)}; a preference record needs "
                           "'chosen' and 'rejected' (and a 'prompt' unless they are message lists)")
    chosen, rejected = record["chosen"], record["rejected"]
    if isinstance(chosen, str) and isinstance(rejected, str):
        if "prompt" not in record:
            raise MinigptError(f"{where}: missing 'prompt'; with 'chosen' and 'rejected' as strings (the two "
                               "replies) the record needs the prompt they answer")
        return prompt_messages(record["prompt"], where), *_differ(chosen, rejected, where)
    if isinstance(chosen, str) or isinstance(rejected, str):
        raise MinigptError(f"{where}: 'chosen' and 'rejected' must both be strings or both message lists")
    chosen, rejected = validate_messages(chosen, f"{where}: chosen"), validate_messages(rejected, f"{where}: rejected")
    if "prompt" in record:  # explicit prompt: each side is the reply
        prompt = prompt_messages(record["prompt"], where)
    else:  # implicit prompt: the leading messages both sides share
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    return prompt, *_differ(_reply(chosen, where, "chosen"), _reply(rejected, where, "rejected"), where)


def _differ(chosen: str, rejected: str, where: str) -> tuple[str, str]:
    if chosen == rejected:  # a pair that prefers a reply to itself: DPO's and the reward model's gradient is 0
        raise MinigptError(f"{where}: 'chosen' and 'rejected' are the same reply; a preference needs two different "
                           "ones (drop the record)")
    return chosen, rejected


def _reply(messages: list[dict[str, str]], where: str, side: str) -> str:
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise MinigptError(f"{where}: after the prompt, '{side}' must be exactly one assistant message (got "
                           f"{len(messages)} message(s)); preference pairs differ only in the final reply")
    return messages[0]["content"]


def is_val(where_or_key: str) -> bool:
    """A fixed ~5% validation split by a hash of the record's text."""
    return hashlib.sha256(where_or_key.encode("utf-8")).digest()[0] % VAL_ONE_IN == 0


def split_records(records: list[tuple[str, Any, Any]]) -> dict[str, list[Any]]:
    """Split (key, item, explicit split) triples: a record's own "split" ("train"/"val") wins, else ~5% val by a
    hash of its content; at least one item in each split when there are two."""
    out: dict[str, list[Any]] = {"train": [], "val": []}
    for key, item, split in records:
        out[split if split in out else ("val" if is_val(key) else "train")].append(item)
    if not out["val"] and len(out["train"]) > 1:
        out["val"].append(out["train"].pop())
    return out


# ---------------------------------------------------------------------------------------------- rendered rows


@dataclass
class Rows:
    """Rendered rows of both splits plus what the report needs to know about them."""

    train: list
    val: list
    source: str
    extra: dict = field(default_factory=dict)

    def split(self, name: str) -> list:
        return self.train if name == "train" else self.val


def load_conversations(path_or_records, tokenizer, *, source: str = "") -> Rows:
    """SFT rows (ids, mask). A conversation with no assistant turn teaches nothing and is left out (with a note
    naming the first); data with none at all is refused."""
    keyed, silent = [], []
    for where, record in _records(path_or_records):
        messages = conversation_of(record, where)
        ids, mask = render_conversation(tokenizer, messages)
        if not any(mask):
            silent.append(where)
            continue
        keyed.append((json.dumps(messages, ensure_ascii=False), (ids, mask), record.get("split")))
    name = str(source or path_or_records)
    if not keyed:
        raise MinigptError(f"{name}: no conversations with an assistant turn, so there is nothing to learn; add "
                           "assistant replies" if silent else f"{name}: no conversations; give at least a few")
    if silent:
        print0(f"note: {len(silent)} of {len(silent) + len(keyed)} conversations have no assistant reply and are "
               f"left out (the first: {silent[0]})", markup=False)
    return _rows(split_records(keyed), name, "conversations")


def load_preferences(path_or_records, tokenizer, *, source: str = "") -> Rows:
    """Preference rows ((chosen ids, mask), (rejected ids, mask))."""
    keyed = []
    for where, record in _records(path_or_records):
        prompt, chosen, rejected = preference_of(record, where)
        key = json.dumps([prompt, chosen, rejected], ensure_ascii=False)
        keyed.append((key, (render_completion(tokenizer, prompt, chosen), render_completion(tokenizer, prompt, rejected)),
                      record.get("split")))
    if not keyed:
        raise MinigptError(f"{source or path_or_records}: no preference pairs")
    return _rows(split_records(keyed), str(source or path_or_records), "preference pairs")


def load_prompts(path_or_records, tokenizer, *, source: str = "") -> Rows:
    """RL prompt rows (prompt ids, record): the record (with e.g. 'reference') goes to the reward function."""
    keyed = []
    for where, record in _records(path_or_records):
        if "prompt" not in record:
            raise MinigptError(f"{where}: missing 'prompt' (a string or a list of messages)")
        messages = prompt_messages(record["prompt"], where)
        keyed.append((json.dumps(messages, ensure_ascii=False), (render_prompt(tokenizer, messages), record),
                      record.get("split")))
    if not keyed:
        raise MinigptError(f"{source or path_or_records}: no prompts")
    return _rows(split_records(keyed), str(source or path_or_records), "prompts")


def _rows(parts: dict[str, list], source: str, what: str) -> Rows:
    """Both splits, each non-empty (a record's "split" field can empty one; one record cannot fill two)."""
    for split, rows in parts.items():
        if not rows:
            raise MinigptError(f"{source}: the {split} split has no {what} ({len(parts['train']) + len(parts['val'])}"
                               f" in all); give at least 2, with the \"split\" fields, if any, naming both "
                               "train and val")
    return Rows(parts["train"], parts["val"], source)


def _records(path_or_records) -> Iterator[tuple[str, dict]]:
    if not isinstance(path_or_records, (str, Path)):
        for i, record in enumerate(path_or_records):
            yield f"record {i}", record
    elif str(path_or_records).endswith(".jsonl") and Path(path_or_records).expanduser().exists():
        yield from read_jsonl(Path(path_or_records).expanduser())
    else:
        yield from _dataset_records(str(path_or_records))


def _dataset_records(spec: str) -> Iterator[tuple[str, dict]]:
    """Rows of a .json/.parquet/.csv file or a Hub dataset through `datasets` (as `pretrain --data` loads them);
    rows of the source's own validation split come marked "split": "val", the others "train"."""
    from .sources import open_source

    source = open_source(spec)
    if source.kind not in ("rows", "hub"):
        raise MinigptError(f"--data {spec}: chat data is a .jsonl, .json, .parquet or .csv file or a Hub dataset "
                           "id, not plain text")
    train, val = source.rows()
    for split, rows in (("train", train), ("val", val)):
        for i, record in enumerate(rows or ()):
            if val is not None:
                record = {**record, "split": split}
            yield f"{spec} ({split} row {i + 1})", record


# ---------------------------------------------------------------------------------------------- batches


class RowBatches:
    """Endless batches of rows in shuffled epochs. State = (generator state at the epoch start, position), so a
    restored iterator replays the same permutation and continues at the same row. DDP ranks slice each global
    batch, as `TokenWindows` does.

    `pack` = a token length (block_size + 1): each batch row is then several rendered sequences end to end, in
    the shuffled order, as many as fit (TRL's packing). The built-in conversations average 50 tokens: padded to
    the longest of 16, a batch held 53% real tokens; packed rows hold 89%. A packed sequence can attend to the one before it (each starts with <|bos|>); its loss mask is
    its own."""

    def __init__(self, rows: Sequence, batch_size: int, collate: Callable[[list], Any], *, seed: int,
                 rank: int = 0, world: int = 1, pack: int | None = None):
        if not rows:
            raise MinigptError("no rows to train on; the data split is empty")
        self.rows, self.batch_size, self.collate, self.pack = rows, batch_size, collate, pack
        self.rank, self.world = rank, world
        self.generator = torch.Generator().manual_seed(seed)
        self._new_epoch()

    def _new_epoch(self) -> None:
        self.epoch_state = self.generator.get_state()
        self.order = torch.randperm(len(self.rows), generator=self.generator).tolist()
        self.position = 0

    def __iter__(self) -> "RowBatches":
        return self

    def _peek(self):
        if self.position >= len(self.order):
            self._new_epoch()
        return self.rows[self.order[self.position]]

    def __next__(self):
        picked = [self._packed_row() if self.pack else self._take() for _ in range(self.batch_size * self.world)]
        return self.collate(picked[self.rank * self.batch_size:(self.rank + 1) * self.batch_size])

    def _take(self):
        row = self._peek()
        self.position += 1
        return row

    def _packed_row(self) -> tuple[list[int], list[int]]:
        """Whole sequences end to end while they fit in `pack` tokens (one that is longer alone fills a row)."""
        ids, mask = list(self._peek()[0]), list(self._peek()[1])
        self.position += 1
        while len(ids) + len(self._peek()[0]) <= self.pack:
            more_ids, more_mask = self._take()
            ids, mask = ids + list(more_ids), mask + list(more_mask)
        return ids, mask

    def state_dict(self) -> dict[str, Any]:
        return {"epoch_rng": self.epoch_state, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["epoch_rng"])
        self._new_epoch()
        self.position = int(state["position"])


def window(ids: list[int], mask: list[int], block_size: int, reply: int | None = None) -> tuple[list[int], list[int]]:
    """Fit a rendered sequence (+1 for the shifted target) into block_size + 1 tokens. The prompt (what precedes
    the first trained token) keeps its end, the reply (the rest) its start: the prompt gets what the reply
    leaves, and at least half the window when both are long, so that the model always sees the question it
    answers. `reply`: the reply length to make room for instead of this row's (a preference pair passes its
    longer reply's, so that both replies follow the same prompt tokens)."""
    limit = block_size + 1
    if len(ids) <= limit and reply is None:
        return ids, mask
    first = _first_target(mask)
    keep = min(first, max(limit - (len(ids) - first if reply is None else reply), limit // 2))
    start = first - keep
    return ids[start:start + limit], mask[start:start + limit]


def lm_collate(block_size: int, pad_id: int):
    """(ids, mask) rows -> (x, y) padded to the longest row; y is -1 where mask is 0 or padding. A row may carry
    a third item, the reply length `window` makes room for."""
    def collate(rows: list) -> tuple[torch.Tensor, torch.Tensor]:
        fitted = [window(row[0], row[1], block_size, *row[2:]) for row in rows]
        T = max(len(ids) for ids, _ in fitted) - 1
        x = torch.full((len(rows), T), pad_id, dtype=torch.long)
        y = torch.full((len(rows), T), -1, dtype=torch.long)
        for i, (ids, mask) in enumerate(fitted):
            n = len(ids) - 1
            x[i, :n] = torch.tensor(ids[:-1])
            y[i, :n] = torch.tensor([t if m else -1 for t, m in zip(ids[1:], mask[1:])])
        return x, y
    return collate


def pair_collate(block_size: int, pad_id: int):
    """Preference rows -> one (2B, T) batch: chosen rows first, then rejected, as `lm_collate` lays them out."""
    lm = lm_collate(block_size, pad_id)

    def collate(rows: list) -> tuple[torch.Tensor, torch.Tensor]:
        # both replies of a pair are cut after the same prompt tokens: room for the longer one
        room = [max(_reply_length(*r[0]), _reply_length(*r[1])) for r in rows]
        return lm([(*r[0], n) for r, n in zip(rows, room)] + [(*r[1], n) for r, n in zip(rows, room)])
    return collate


def _reply_length(ids: list[int], mask: list[int]) -> int:
    return len(ids) - _first_target(mask)


def _first_target(mask: list[int]) -> int:
    """Where the trained tokens (the reply) start: what precedes is the prompt."""
    return next((i for i, m in enumerate(mask) if m), 0)
