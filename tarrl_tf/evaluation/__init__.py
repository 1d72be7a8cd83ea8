"""Downstream evaluation: plain heads on a frozen encoder, attacked; tasks; sanity checks; reports.

Rooms: `protocol.py` (the report of one encoder on one task), `downstream.py`
(heads and the bound's Lipschitz constant), `tasks.py` (derived tasks, by
registration), `sanity.py` (checks against false robustness), `reports.py`
(the JSON, Markdown and figure files), `per_image.py` (the per-image results a
report is computed from), `assembly.py` (the report from them), `shards.py` (an
evaluation split over processes, and the merge of their results).
"""

from tarrl_tf.evaluation import downstream, reports, sanity, shards, tasks  # noqa: F401
from tarrl_tf.evaluation.protocol import (  # noqa: F401
    BOUND_NOTE,
    SUBSET_ATTACKS,
    attack_grid,
    evaluate,
    evaluate_on_dataset,
    load_encoder,
    representation_shift,
)
