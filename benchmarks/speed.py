"""The speed benchmark: training-step ratios, bfloat16, the attack path, throughput and memory, as JSON.

    python -m benchmarks.speed --output=benchmarks/bench.json          # the full run
    python -m benchmarks.speed --quick --output=benchmarks/bench.json  # a few minutes
    python -m benchmarks.speed --readme       # README's cost table from benchmarks/bench.json

Everything timed runs in one process with the configurations interleaved and
reports medians after a warm-up: ratios, not seconds, are the result (they
carry across machines and survive load from other processes). The JSON:

- `machine`: cores, CPU flags that matter (avx512_bf16, amx), versions;
- `step_ratio[encoder][precision][configuration]`: a training step over plain
  SimCLR's, for every registered estimator (PGD at 3 and 7 steps) and the
  `acl`, `deacl` and `supervised_at` baselines (at the zoo's PGD steps);
- `mixed_precision_speedup[encoder][configuration]`: float32 step / bfloat16 step;
- `jit_compile_speedup`: `{"value": null, "reason": ...}` (no XLA option);
- `attack_speedup`: the evaluation's PGD-40, in float32 and with its search in
  bfloat16, against `cleverhans.tf2` PGD-40 called eagerly batch by batch,
  same classifier and images, with the three robust accuracies;
- `threads`: SimCLR's and TARRL PGD-3's step (small CNN) with one intra-op
  thread (and one inter-op thread) over TensorFlow's default, which sizes
  its pools by the cores;
- `images_per_second` and `peak_rss_mib`: pretraining (per encoder and
  precision) and attacked evaluation, each measured in a process of its own;
  `input_pipeline_images_per_second`: the pretraining input pipeline alone.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import pathlib
import platform
import subprocess
import sys
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
PRESETS = {
    "full": {"batch_size": {"small_cnn": 256, "cifar_resnet": 128}, "rounds": 10, "warmup": 2,
             "attack_images": 1000, "attack_batch_size": 256, "attack_steps": 40,
             "attack_rounds": 3, "pretrain_steps": 10, "thread_rounds": 3, "tiny": False},
    "quick": {"batch_size": {"small_cnn": 128, "cifar_resnet": 64}, "rounds": 3, "warmup": 1,
              "attack_images": 1000, "attack_batch_size": 256, "attack_steps": 40,
              "attack_rounds": 2, "pretrain_steps": 4, "thread_rounds": 2, "tiny": False},
    # For tests: 8x8 images, the smallest networks, one round.
    "tiny": {"batch_size": {"small_cnn": 8, "cifar_resnet": 8}, "rounds": 1, "warmup": 1,
             "attack_images": 10, "attack_batch_size": 4, "attack_steps": 3, "attack_rounds": 1,
             "pretrain_steps": 2, "thread_rounds": 1, "tiny": True},
}
JIT_REASON = ("the option was removed: jit_compile=True fails on the training step (the "
              "augmentation's CropAndResize has no XLA CPU kernel), and on the rest of the step "
              "it was 1.5-4.3x slower than graph mode")
ENCODERS = ("small_cnn", "cifar_resnet")

flags.DEFINE_string("output", None, "Where to write the JSON (default: print it).")
flags.DEFINE_boolean("quick", False, "Small batches and few rounds: a few minutes.")
flags.DEFINE_boolean("tiny", False, "8x8 images and tiny networks, for tests (numbers mean little).")
flags.DEFINE_list("encoders", list(ENCODERS), "Encoders whose training steps are timed.")
flags.DEFINE_list("configurations", None,
                  "Only these configurations (default: every estimator and baseline).")
flags.DEFINE_list("precisions", ["float32", "bfloat16"], "Precisions of the training steps.")
flags.DEFINE_string("attack_classifier", "mnist_cnn_tarrl_linf03",
                    "Zoo entry (with a head) the attacks run on, or 'synthetic' (a tiny one).")
flags.DEFINE_string("datasets_dir", str(REPO.parent / "shared" / "datasets"),
                    "Folder of <name>/<name>.npz offline datasets (the attack's test images).")
flags.DEFINE_string("zoo_dir", str(REPO / "zoo"), "The zoo of --attack_classifier.")
flags.DEFINE_boolean("readme", False,
                     "Rewrite README.md's cost table from --bench, measure nothing.")
flags.DEFINE_string("bench", str(REPO / "benchmarks" / "bench.json"), "The JSON --readme reads.")
FLAGS = flags.FLAGS


def machine():
    """Cores, the CPU's model and bfloat16 flags, the versions that matter."""
    import keras
    import tensorflow as tf

    cpu_flags, model = set(), platform.processor()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                cpu_flags |= set(value.split())
            elif key.strip() == "model name":
                model = value.strip()
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model,
            "avx512_bf16": "avx512_bf16" in cpu_flags, "amx_bf16": "amx_bf16" in cpu_flags,
            "amx_tile": "amx_tile" in cpu_flags, "avx512f": "avx512f" in cpu_flags,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0",
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version(), "load_average": list(os.getloadavg())}


def child(job, env=None):
    """Runs `benchmarks.speed_child` on `job` in a new process (with `env` added); its JSON."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "-m", "benchmarks.speed_child", json.dumps(job)],
                            cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"benchmarks.speed_child {job} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# TensorFlow reads its thread pools' sizes once, at start-up: each setting is a process.
THREAD_SETTINGS = {
    "default": {},
    "intra_op_1": {"TF_NUM_INTRAOP_THREADS": "1"},
    "intra_op_1_inter_op_1": {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"},
}


def thread_settings(settings, log):
    """Step seconds of SimCLR and TARRL PGD-3 (small CNN) per thread setting, over the default's.

    The settings' processes alternate, `rounds` times, so load from other
    processes hits them alike; each ratio is a median over those processes.
    """
    result = {"cores": os.cpu_count(), "ratio_to_default": {}}
    for configuration in ("simclr", "pgd-3"):
        job = {"task": "step_seconds", "encoder": "small_cnn", "configuration": configuration,
               "batch_size": settings["batch_size"]["small_cnn"], "rounds": settings["rounds"],
               "warmup": settings["warmup"], "tiny": settings["tiny"]}
        seconds = {name: [] for name in THREAD_SETTINGS}
        for round_ in range(settings["thread_rounds"]):
            for name, env in THREAD_SETTINGS.items():
                seconds[name].append(child(job, env)["seconds"])
            log(f"threads: {configuration} round {round_ + 1}/{settings['thread_rounds']}")
        default = sorted(seconds["default"])[len(seconds["default"]) // 2]
        result["ratio_to_default"][configuration] = {
            name: round(sorted(s)[len(s) // 2] / default, 3) for name, s in seconds.items()}
    return result


def measure(preset, *, encoders, configurations, precisions, attack_classifier, log):
    """Every measurement of the JSON, in order."""
    from benchmarks import speed_attack, speed_steps

    settings = {"preset": preset, **PRESETS[preset], "encoders": list(encoders),
                "precisions": list(precisions)}
    step_ratio, speedup, baseline_steps = {}, {}, {}
    for encoder in encoders:
        medians, baseline_steps[encoder] = speed_steps.step_times(
            encoder, batch_size=settings["batch_size"][encoder], rounds=settings["rounds"],
            warmup=settings["warmup"], names=configurations, precisions=precisions,
            tiny=settings["tiny"], log=log)
        step_ratio[encoder] = speed_steps.ratios(medians)
        speedup[encoder] = speed_steps.mixed_precision_speedup(medians)
    settings["baseline_steps"] = baseline_steps
    locations = {"datasets_dir": FLAGS.datasets_dir, "zoo_dir": FLAGS.zoo_dir}
    classifier, x, y, epsilon, description = speed_attack.classifier_and_images(
        attack_classifier, num_images=settings["attack_images"], **locations)
    attack = speed_attack.attack_speedup(
        classifier, x, y, epsilon=epsilon, steps=settings["attack_steps"],
        batch_size=settings["attack_batch_size"], rounds=settings["attack_rounds"], log=log)
    attack["classifier"] = description
    rates = {"pretraining": {}, "attacked_evaluation": None}
    memory = {"pretraining": {}, "attacked_evaluation": None}
    pipeline = {}  # the input pipeline alone, against the steps it feeds
    for encoder in encoders:
        rates["pretraining"][encoder], memory["pretraining"][encoder] = {}, {}
        for precision in precisions:
            log(f"pretraining throughput: {encoder} {precision}")
            result = child({"task": "pretrain", "encoder": encoder, "precision": precision,
                            "batch_size": settings["batch_size"][encoder],
                            "steps": settings["pretrain_steps"], "tiny": settings["tiny"]})
            rates["pretraining"][encoder][precision] = round(result["images_per_second"], 2)
            memory["pretraining"][encoder][precision] = round(result["peak_rss_mib"], 1)
            pipeline.setdefault(encoder, {})[precision] = round(
                result["input_pipeline_images_per_second"], 1)
    log("attacked evaluation throughput")
    result = child({"task": "attacked_evaluation", "source": attack_classifier,
                    "num_images": settings["attack_images"],
                    "batch_size": settings["attack_batch_size"],
                    "steps": settings["attack_steps"], **locations})
    rates["attacked_evaluation"] = round(result["images_per_second"], 2)
    memory["attacked_evaluation"] = round(result["peak_rss_mib"], 1)
    threads = thread_settings(settings, log)
    return {"settings": settings, "step_ratio": step_ratio, "mixed_precision_speedup": speedup,
            "threads": threads,
            "jit_compile_speedup": {"value": None, "reason": JIT_REASON},
            "attack_speedup": attack, "images_per_second": rates, "peak_rss_mib": memory,
            "input_pipeline_images_per_second": pipeline}


def command_line():
    # absl leaves the flags out of main's argv: the process's own.
    return " ".join(["python -m benchmarks.speed"]
                    + [a for a in sys.argv[1:] if not a.startswith("--output")])


def main(argv):
    from benchmarks import speed_readme

    if FLAGS.readme:
        print(f"Wrote {speed_readme.update_readme(FLAGS.bench)}")
        return
    preset = "tiny" if FLAGS.tiny else "quick" if FLAGS.quick else "full"
    unknown = sorted(set(FLAGS.encoders) - set(ENCODERS))
    if unknown:
        raise app.UsageError(f"unknown encoders {unknown}; expected some of {list(ENCODERS)}")
    from tarrl_tf_cli import startup

    startup.library()  # TensorFlow without its start-up noise and Keras' step-retracing warnings
    start = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - start:6.0f} s] {message}", file=sys.stderr, flush=True)

    del argv
    bench = {"schema_version": 1, "command": command_line(), "machine": machine()}
    attack_classifier = "synthetic" if FLAGS.tiny else FLAGS.attack_classifier
    bench.update(measure(preset, encoders=FLAGS.encoders, configurations=FLAGS.configurations,
                         precisions=FLAGS.precisions, attack_classifier=attack_classifier,
                         log=log))
    bench["machine"]["load_average_after"] = list(os.getloadavg())
    bench["seconds"] = round(time.perf_counter() - start, 1)
    text = json.dumps(bench, indent=2) + "\n"
    if FLAGS.output:
        pathlib.Path(FLAGS.output).write_text(text)
        log(f"wrote {FLAGS.output}")
    else:
        print(text)


if __name__ == "__main__":
    app.run(main)
