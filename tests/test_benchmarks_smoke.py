"""benchmarks.train_step runs end to end at a tiny size and prints the documented JSON (no timing assertions)."""

import json

from benchmarks.train_step import main  # importable: conftest puts the repo on sys.path

RUNNER_KEYS = {"batch", "images_per_s", "seconds_per_image", "images_per_s_repeats", "gflop_per_s",
               "peak_memory_mib"}


def test_train_step_benchmark_smoke(capsys):
    result = main(["--size", "32", "--members", "unet_l1", "--steps", "1", "--warmup", "0", "--batch", "2",
                   "--ngf", "8", "--images", "2", "--data-images", "2", "--data-repeats", "1",
                   "--inference-steps", "1", "--slide-size", "40", "72", "--device", "cpu"])
    out = capsys.readouterr().out
    assert json.loads(out) == result  # stdout is the JSON document and nothing else

    assert {"benchmark", "device", "device_name", "torch", "threads", "settings", "memory_method", "sizes",
            "load_average", "max_rss_mib", "elapsed_s"} <= result.keys()
    assert result["device"] == "cpu"
    assert result["settings"]["batch"] == 2 and result["settings"]["reference_batch"] == 1
    assert result["settings"]["ours_levers"]["precision"] == "fp32"
    size = result["sizes"]["32"]
    assert {"ours", "reference", "speedup"} <= size["data_loading"].keys()
    member = size["members"]["unet_l1"]
    assert {"params", "train_gflop_per_image", "state_mib", "ours", "ours_same_as_reference", "reference",
            "speedup", "speedup_same_batch", "inference"} <= member.keys()
    for name in ("ours", "ours_same_as_reference", "reference"):
        assert RUNNER_KEYS <= member[name].keys()
        assert member[name]["images_per_s"] > 0
        assert "model_flops_utilisation" not in member[name]  # CUDA only
    assert member["ours"]["batch"] == 2 and member["ours_same_as_reference"]["batch"] == 1
    assert member["train_gflop_per_image"] > 0 and member["inference"]["gflop_per_image"] > 0
    assert member["speedup"] > 0 and member["speedup_same_batch"] > 0
    slide = member["inference"]["slide"]  # 72x40 in 32 px windows, 8 px overlap: 3 x 2 windows
    assert slide["photo"] == "72x40" and slide["windows"] == 6 and slide["overlap"] == 8
    assert slide["images_per_s"] > 0 and slide["window_throughput_vs_whole"] > 0


def test_startup_benchmark_times_every_stage_kind(capsys):
    """benchmarks.startup's fixed costs alone (the study part runs a whole study: benchmarks/README.md)."""
    from benchmarks.startup import main as startup
    from seg_p2p.codedeps import STAGE_MODULES

    result = startup(["--fixed-only", "--repeats", "1"])
    assert json.loads(capsys.readouterr().out) == result
    assert set(result["fixed_cost"]) == {"python", "mlflow", *STAGE_MODULES}
    assert all(cost["median_s"] > 0 and len(cost["runs_s"]) == 1 for cost in result["fixed_cost"].values())
    assert "study" not in result
