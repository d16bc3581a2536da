"""TensorRT: type check everywhere, build and run where TensorRT and a GPU exist.

The static type check runs against tensorrt-stubs; an optional TensorRT-RTX build runs
on the CPU.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from oe_depth_ros.inference.backends import tensorrt_usable

REPO = Path(__file__).resolve().parents[1]
TRT_MODULES = ["oe_depth_ros/inference/tensorrt_backend.py",
               "oe_depth_ros/inference/tensorrt_build.py"]
HEIGHT, WIDTH = 64, 192

TRT_USABLE, TRT_REASON = tensorrt_usable()
needs_tensorrt = pytest.mark.skipif(not TRT_USABLE, reason=f"TensorRT not usable: {TRT_REASON}")

MYPY_CONFIG = """\
[mypy]
strict = True
follow_imports = silent
[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*,tensorrt_libs]
ignore_errors = True
"""


def _split_params(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return parts + [current]


def _repair_stub_line(line: str) -> str:
    """Fix the generated stubs' defects that stop mypy from parsing them.

    Parameters named ``in`` (a keyword), required parameters after defaulted ones, and
    the module-level ``bool`` data type shadowing the builtin in annotations.
    """
    match = re.match(r"^(\s*def \w+\()(.*)(\)\s*->.*:\s*)$", line)
    if match:
        params, seen_default = [], False
        for param in _split_params(match.group(2)):
            param = re.sub(r"^(\s*)in:", r"\1in_:", param)
            name = param.strip()
            if "=" in name:
                seen_default = True
            elif seen_default and name and not name.startswith("*") and name != "/":
                param += " = ..."
            params.append(param)
        line = match.group(1) + ",".join(params) + match.group(3)
    if line[:1].isspace() or line.startswith("def "):
        line = re.sub(r"(?<![\w.'\"])bool(?![\w'\"])", "builtins.bool", line)
    return line


def repaired_stubs(dest: Path) -> Path:
    """Copy the installed tensorrt-stubs (tensorrt, tensorrt_bindings) into ``dest``, repaired."""
    import importlib.util

    for package in ("tensorrt", "tensorrt_bindings"):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            pytest.skip(f"tensorrt-stubs not installed (no {package} package)")
        stubs = [f for loc in spec.submodule_search_locations for f in Path(loc).glob("*.pyi")]
        if not stubs:
            pytest.skip(f"no .pyi stubs found for {package}")
        for stub in stubs:
            lines = [_repair_stub_line(line) for line in stub.read_text().splitlines()]
            at = 1 if lines and lines[0].startswith("from __future__") else 0
            lines.insert(at, "import builtins")
            (dest / package).mkdir(parents=True, exist_ok=True)
            (dest / package / stub.name).write_text("\n".join(lines) + "\n")
    (dest / "tensorrt_libs.pyi").write_text("")
    return dest


def run_mypy(tmp_path: Path, files: list[str]) -> subprocess.CompletedProcess[str]:
    stubs = repaired_stubs(tmp_path / "stubs")
    config = tmp_path / "mypy.ini"
    config.write_text(MYPY_CONFIG)
    env = {"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config), *files],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_tensorrt_modules_type_check(tmp_path: Path) -> None:
    result = run_mypy(tmp_path, TRT_MODULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_type_check_catches_api_misuse(tmp_path: Path) -> None:
    """The check is real: a wrong TensorRT call is reported against the stubs."""
    bad = tmp_path / "bad_trt.py"
    bad.write_text("import tensorrt as trt\n\n\n"
                   "def f(builder: trt.Builder) -> None:\n"
                   "    builder.create_network('explicit')\n")
    result = run_mypy(tmp_path, [str(bad)])
    assert result.returncode == 1
    assert 'incompatible type "str"; expected "int"' in result.stdout


@pytest.mark.skipif(TRT_USABLE, reason="TensorRT is usable here")
def test_build_engine_command_explains_missing_tensorrt(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    from oe_depth_ros.cli import main as cli_main

    out = tmp_path / "m.engine"
    rc = cli_main(["build-engine", "--onnx", str(tmp_path / "m.onnx"), "--precision", "fp16",
                   "--out", str(out)])
    assert rc == 1 and not out.exists()
    assert f"cannot build a TensorRT engine here: {TRT_REASON}" in caplog.text
    assert "pip install tensorrt" in caplog.text


# ---- builds and runs: only where TensorRT and a CUDA GPU are present -----------------------

@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from oe_depth_ros.inference.export import export_onnx

    out = tmp_path_factory.mktemp("trt") / "model.onnx"
    export_onnx("diffnet_small", out, HEIGHT, WIDTH)
    return out


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt
@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_engine_matches_onnxruntime(onnx_file: Path, tmp_path: Path, precision: str,
                                    tolerance: float) -> None:
    from oe_depth_ros.inference import create_backend
    from oe_depth_ros.inference.tensorrt_build import build_engine

    engine = tmp_path / f"model.{precision}.engine"
    sidecar = build_engine(onnx_file, engine, precision=precision, workspace_mb=1024,
                           timing_cache=tmp_path / "timing.cache")
    assert sidecar.key.precision == precision and (tmp_path / "timing.cache").is_file()
    trt_backend = create_backend("tensorrt", engine)
    ort_backend = create_backend("onnxruntime", onnx_file, device="cpu")
    image = np.random.default_rng(2).integers(0, 256, (120, 400, 3), dtype=np.uint8)
    got, want = trt_backend.predict(image), ort_backend.predict(image)
    assert got.shape == want.shape == (HEIGHT, WIDTH)
    # GPU resizing differs from OpenCV's uint8 result by up to 1/255 per pixel.
    assert np.max(np.abs(got - want) / want) <= tolerance + 5e-3
    batch = np.random.default_rng(3).random((1, 3, HEIGHT, WIDTH), dtype=np.float32)
    got_b, want_b = trt_backend.infer(batch), ort_backend.infer(batch)
    assert np.max(np.abs(got_b - want_b) / want_b) <= tolerance


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt
def test_engine_cache_reuse_and_rejection(onnx_file: Path, tmp_path: Path) -> None:
    from oe_depth_ros.inference import EngineMismatchError, create_backend
    from oe_depth_ros.inference.engine_cache import sidecar_path
    from oe_depth_ros.inference.tensorrt_build import build_engine

    engine = tmp_path / "model.engine"
    first = build_engine(onnx_file, engine, precision="fp32", workspace_mb=1024)
    again = build_engine(onnx_file, engine, precision="fp32", workspace_mb=1024)
    assert again.build_time == first.build_time  # reused, not rebuilt
    data = json.loads(sidecar_path(engine).read_text())
    sidecar_path(engine).write_text(json.dumps(dict(data, gpu_name="Some Other GPU")))
    with pytest.raises(EngineMismatchError, match="gpu_name: engine has 'Some Other GPU'"):
        create_backend("tensorrt", engine)
    rebuilt = build_engine(onnx_file, engine, precision="fp32", workspace_mb=1024)
    assert rebuilt.key.gpu_name != "Some Other GPU"
    assert create_backend("tensorrt", engine).name == "tensorrt"


# ---- TensorRT-RTX: a TensorRT-family builder that parses and builds on the CPU --------------

@pytest.mark.slow
def test_tensorrt_rtx_builds_odconv_graph(tmp_path: Path) -> None:
    """The exported ODConv graph (convolutions with computed kernels) parses and builds."""
    trt_rtx = pytest.importorskip("tensorrt_rtx", reason="pip install tensorrt-rtx-cu13")
    from oe_depth_ros.inference.export import export_onnx

    onnx_path = tmp_path / "oe_depth_small.onnx"
    export_onnx("oe_depth_small", onnx_path, HEIGHT, WIDTH)
    logger = trt_rtx.Logger(trt_rtx.Logger.WARNING)
    builder = trt_rtx.Builder(logger)
    network = builder.create_network(0)
    parser = trt_rtx.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))
    errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
    assert ok, errors
    config = builder.create_builder_config()
    serialized = builder.build_serialized_network(network, config)
    assert serialized is not None and serialized.nbytes > 0
