"""An evaluation split over processes: each shard attacks its images, the merge makes the report.

`evaluate(..., shard=(i, k))` attacks only shard `i` of `k` of the test set
and returns its record: the evaluation's plan, a digest of its head, and the
per-image results of its images (`per_image`). `merge` of the `k` records
computes the report from the merged per-image results with the code one run
uses (`assembly.assemble`), so it is that run's report: the same accuracies,
losses, worst cases and checks. Shards are whole batches of the attacks
(`span`), and each batch's random starts follow from the seed and its first
image (`attacks.run_attack`), so a shard's images get the results one run
gives them.

Example:
```python
from tarrl_tf import evaluation
from tarrl_tf.evaluation import shards

for i in range(2):  # one process, one worker or one device each
    record, _, _ = evaluation.evaluate_on_dataset(encoder, encoder_name="e", dataset="digits",
                                                  attack_specs=specs, shard=(i, 2))
    shards.write_record(record, "out/shards")
report = shards.merge(shards.read_records("out/shards"))
```
"""

import hashlib
import json
import math
import os
import re

import numpy as np

from tarrl_tf.evaluation.assembly import assemble
from tarrl_tf.evaluation.per_image import Recorded
from tarrl_tf.files import write_atomic

FORMAT = "tarrl_tf evaluation shard 1"
_FILE = re.compile(r"^shard_(\d+)_of_(\d+)\.json$")


def span(num_examples, batch_size, shard):
    """The images `[start, stop)` of `shard = (index, count)`; `(0, num_examples)` for None.

    The `ceil(num_examples / batch_size)` batches are dealt out in order, as
    evenly as they go: every shard starts at a multiple of `batch_size`.
    """
    if shard is None:
        return 0, num_examples
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard must be (index, count), got {shard!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard (index, count) needs 0 <= index < count, got {shard!r}")
    batches = math.ceil(num_examples / batch_size)
    if count > batches:
        raise ValueError(f"{count} shards of {batches} batches of {batch_size} images: some "
                         "would have none; use fewer shards or a smaller batch size")
    start = index * batches // count * batch_size
    stop = min(num_examples, (index + 1) * batches // count * batch_size)
    return start, stop


def head_digest(head):
    """A fingerprint of the head's weights: shards may merge only if theirs are equal."""
    digest = hashlib.sha256()
    for weight in head.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def record(plan, measured, shard, head, lipschitz):
    """The record of one shard: plain JSON values (float32 values exactly, as Python floats)."""
    return {
        "format": FORMAT,
        "shard": [int(shard[0]), int(shard[1])],
        "span": list(measured.span),
        "plan": plan,
        "head": {"digest": head_digest(head), "lipschitz": lipschitz},
        "labels": measured.labels[measured.span[0]:measured.span[1]].tolist(),
        "clean": _lists(measured.clean_part),
        "runs": {key: _lists(part) for key, part in measured.runs.items()},
        "shifts": [[norm, epsilon, values.tolist()]
                   for (norm, epsilon), values in measured.shift_parts.items()],
    }


def _lists(arrays):
    return [array.tolist() for array in arrays]


def write_record(shard_record, folder):
    """Writes `<folder>/shard_<i>_of_<k>.json` (atomically); returns its path."""
    index, count = shard_record["shard"]
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"shard_{index}_of_{count}.json")
    write_atomic(path, json.dumps(shard_record))
    return path


def read_records(folder):
    """The records `write_record` wrote into `folder`, in shard order."""
    names = sorted((int(m.group(1)), name) for name in os.listdir(folder)
                   if (m := _FILE.match(name)))
    if not names:
        raise FileNotFoundError(f"no shard_<i>_of_<k>.json file in {folder}")
    records = []
    for _, name in names:
        with open(os.path.join(folder, name)) as f:
            records.append(json.load(f))
    return records


def merge(records):
    """The report of the evaluation whose shards wrote `records` (see the module doc).

    Raises:
        ValueError: a shard missing or twice, shards of different evaluations
            (plans, heads, datasets) or not of this format.
    """
    records = sorted(records, key=lambda r: r.get("shard", [0])[0])
    _check_complete(records)
    first = records[0]
    plan, count = first["plan"], first["plan"]["num_examples"]
    runs = {}
    for key in first["runs"]:
        n = json.loads(key)[1]
        parts = [r["runs"].get(key) for r in records]
        if any(part is None for part in parts):
            raise ValueError(f"a shard lacks the attack run {key}")
        runs[key] = (np.concatenate([np.asarray(p[0], bool) for p in parts]),
                     np.concatenate([np.asarray(p[1], np.float32) for p in parts]))
        if len(runs[key][0]) != n:
            raise ValueError(f"the shards cover {len(runs[key][0])} of the {n} images of {key}")
    shifts = {}
    for norm, epsilon, _ in first["shifts"]:
        parts = [next(v for m, e, v in r["shifts"] if (m, e) == (norm, epsilon)) for r in records]
        shifts[(norm, epsilon)] = np.concatenate([np.asarray(p, np.float32) for p in parts])
    results = Recorded(
        labels=np.concatenate([np.asarray(r["labels"], np.int64) for r in records]),
        clean=(np.concatenate([np.asarray(r["clean"][0], bool) for r in records]),
               np.concatenate([np.asarray(r["clean"][1], np.float32) for r in records])),
        runs=runs, shifts=shifts)
    if len(results.labels) != count:
        raise ValueError(f"the shards cover {len(results.labels)} of the {count} test images")
    report = assemble(plan, results, first["head"]["lipschitz"])
    fields = first.get("report_fields", {})
    return {**fields.get("before", {}), **report, **fields.get("after", {})}


def _check_complete(records):
    if not records:
        raise ValueError("no shard records to merge")
    for r in records:
        if r.get("format") != FORMAT:
            raise ValueError(f"not a shard record of this version ({r.get('format')!r}, "
                             f"expected {FORMAT!r})")
    count = records[0]["shard"][1]
    indices = [r["shard"][0] for r in records]
    if any(r["shard"][1] != count for r in records) or indices != list(range(count)):
        raise ValueError(f"shards {indices} of {[r['shard'][1] for r in records]}: every shard "
                         f"0..{count - 1} of {count} is needed once")
    first = records[0]
    for r in records[1:]:
        for what in ("plan", "report_fields"):
            if r.get(what) != first.get(what):
                raise ValueError(f"shard {r['shard'][0]} has another {what.replace('_', ' ')} "
                                 "than shard 0: they are not shards of one evaluation")
        if r["head"]["digest"] != first["head"]["digest"]:
            raise ValueError(f"shard {r['shard'][0]} trained another head than shard 0 (its "
                             "weights differ): shards must train the same head (same data, "
                             "seed and settings, on machines that compute alike)")
    stops = [r["span"][1] for r in records[:-1]]
    if [r["span"][0] for r in records[1:]] != stops or records[0]["span"][0] != 0:
        raise ValueError(f"the shards' images {[r['span'] for r in records]} do not follow "
                         "one another")
