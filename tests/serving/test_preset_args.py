"""vLLM's own parser reads what KServe's pinned llm-d presets hand it from our objects.

The argv comes from the real preset scripts (``tests/presets.py``: Go template as KServe renders
it, then bash with our ``VLLM_ADDITIONAL_ARGS``); it is parsed by the pinned vLLM's ``vllm serve``
parser (``vllm.entrypoints.launchers.cli_args.make_arg_parser`` over a ``FlexibleArgumentParser``,
as ``vllm/entrypoints/cli/serve.py`` ``ServeSubcommand.subparser_init`` builds it) and checked by
its ``validate_parsed_serve_args``, in the vLLM venv.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from llm_rollout.kserve import builders as b
from llm_rollout.spec import parse_spec
from llm_rollout.versions import VLLM_VERSION
from tests import presets as P

pytestmark = [pytest.mark.parallel]

_PARSE = r"""
import json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser

out = []
for argv in json.loads(sys.stdin.read()):
    assert argv[0] == "serve", argv
    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    ns = parser.parse_args(argv[1:])
    validate_parsed_serve_args(ns)
    kv = ns.kv_transfer_config
    out.append({
        "model_tag": ns.model_tag,
        "served_model_name": ns.served_model_name,
        "kv_cache_dtype": ns.kv_cache_dtype,
        "gpu_memory_utilization": ns.gpu_memory_utilization,
        "max_model_len": ns.max_model_len,
        "override_generation_config": ns.override_generation_config,
        "chat_template_content_format": ns.chat_template_content_format,
        "kv_transfer": None if kv is None else {"kv_connector": kv.kv_connector, "kv_role": kv.kv_role},
        "headless": ns.headless,
        "data_parallel_size": ns.data_parallel_size,
    })
print("PARSED " + json.dumps(out))
"""


def test_vllm_parses_every_preset_command_line_into_the_arguments_we_meant(vllm_python, tmp_path):
    cases, argvs = [], []
    for preset in P.PRESETS:
        spec = parse_spec(P.case_spec(preset))
        obj = b.llm_inference_service(spec, b.default_member(spec, "hf://org/model", "r1"), weight=100)
        for role, main in P.preset_containers(preset).items():
            env = P.env_of(P.our_container(obj, role))
            work = tmp_path / f"{preset}-{role}"
            argvs.append(P.run_preset(P.rendered_command(main, obj), env, work, vllm_version=VLLM_VERSION))
            cases.append((preset, role, spec))
    proc = subprocess.run(
        [str(vllm_python), "-c", _PARSE], input=json.dumps(argvs), capture_output=True, text=True, timeout=300
    )
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("PARSED ")] or [proc.stderr[-3000:]]
    parsed = json.loads(line.split(" ", 1)[1])
    assert len(parsed) == len(cases) == 9
    for (preset, role, spec), got in zip(cases, parsed, strict=True):
        where = f"{preset} {role}"
        assert got["model_tag"] == "/mnt/models", where
        assert got["served_model_name"][0] == spec.served_model_name, where
        assert got["kv_cache_dtype"] == "fp8" and got["gpu_memory_utilization"] == 0.9, where
        assert got["max_model_len"] == 4096, where
        assert got["override_generation_config"] == {"temperature": 0.5, "stop": ["$HOME", "*", "{a,b}", "it's; `x`"]}
        assert got["chat_template_content_format"] == "string", where
        if spec.llmd.prefill is None:
            assert got["kv_transfer"] is None, where
        else:
            role_name = "kv_producer" if role.startswith("prefill") else "kv_consumer"
            assert got["kv_transfer"] == {"kv_connector": "NixlConnector", "kv_role": role_name}, where
        assert got["headless"] == role.endswith("worker"), where
        if "worker-data-parallel" in preset:
            assert got["data_parallel_size"] == 2, where
