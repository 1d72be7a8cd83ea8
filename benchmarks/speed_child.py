"""One workload in a process of its own: its peak resident memory and thread settings are its own.

    python -m benchmarks.speed_child '{"task": "pretrain", "encoder": "small_cnn", ...}'

Prints one JSON line: images per second and the process's peak resident set
(`VmHWM` of /proc/self/status: `getrusage`'s `ru_maxrss` survives `execve`, so
a child would report its parent's peak). `benchmarks.speed` runs it.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import resource
import sys
import time

import keras
import numpy as np


def pretrain(encoder, precision, batch_size, steps, tiny=False):
    """TARRL with PGD at the zoo's steps, fitted on a `data.pretraining_dataset`."""
    from benchmarks import speed_steps
    from tarrl_tf import data

    shape, epsilon, pgd_steps, encoder_fn = speed_steps.encoder_settings(encoder, tiny=tiny)
    keras.utils.set_random_seed(0)
    model = speed_steps.make_model(f"pgd-{pgd_steps}", encoder_fn, epsilon=epsilon,
                                   baseline_steps=pgd_steps, batch_size=batch_size,
                                   precision=precision)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images = np.random.default_rng(0).random((batch_size * steps, *shape), dtype=np.float32)
    dataset = data.pretraining_dataset(images, batch_size=batch_size, seed=0)
    model.fit(dataset.take(1), epochs=1, verbose=0)  # traces
    start = time.perf_counter()
    model.fit(dataset, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    # The input pipeline alone, against the steps it feeds.
    start = time.perf_counter()
    for _ in dataset:
        pass
    pipeline_seconds = time.perf_counter() - start
    return {"images_per_second": len(images) / seconds,
            "input_pipeline_images_per_second": len(images) / pipeline_seconds,
            "estimator": f"pgd-{pgd_steps}", "batch_size": batch_size}


def attacked_evaluation(source, num_images, batch_size, steps, datasets_dir=None, zoo_dir=None):
    """The evaluation's PGD on `num_images` images, after one traced batch."""
    from benchmarks import speed_attack
    from tarrl_tf import attacks

    classifier, x, y, epsilon, description = speed_attack.classifier_and_images(
        source, num_images=num_images, datasets_dir=datasets_dir, zoo_dir=zoo_dir)
    spec = attacks.make_attack("pgd_linf", epsilon=epsilon, steps=steps)
    attacks.run_attack(classifier, x[:batch_size], y[:batch_size], spec, batch_size=batch_size,
                       seed=0)
    start = time.perf_counter()
    attacks.run_attack(classifier, x, y, spec, batch_size=batch_size, seed=0)
    seconds = time.perf_counter() - start
    return {"images_per_second": len(x) / seconds, "attack": spec.to_dict(),
            "classifier": description, "batch_size": batch_size}


def step_seconds(encoder, configuration, batch_size, rounds, warmup, tiny=False):
    """Median seconds of one compiled float32 train step, under this process's thread settings."""
    from benchmarks import speed_steps

    shape, epsilon, pgd_steps, encoder_fn = speed_steps.encoder_settings(encoder, tiny=tiny)
    keras.utils.set_random_seed(0)
    model = speed_steps.make_model(configuration, encoder_fn, epsilon=epsilon,
                                   baseline_steps=pgd_steps, batch_size=batch_size,
                                   precision="float32")
    images = np.random.default_rng(0).random((batch_size, *shape), dtype=np.float32)
    step = speed_steps.TimedStep(model, images)
    times = [step() for _ in range(warmup + rounds)][warmup:]
    return {"seconds": float(np.median(times)),
            "intra_op": os.environ.get("TF_NUM_INTRAOP_THREADS", "default"),
            "inter_op": os.environ.get("TF_NUM_INTEROP_THREADS", "default")}


def main(argv):
    job = json.loads(argv[1])
    task = job.pop("task")
    result = {"pretrain": pretrain, "attacked_evaluation": attacked_evaluation,
              "step_seconds": step_seconds}[task](**job)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


def peak_rss_mib():
    """This process's peak resident set size, in MiB."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


if __name__ == "__main__":
    main(sys.argv)
