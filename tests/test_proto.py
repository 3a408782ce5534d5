"""Our .proto files against the protocol as tritonclient ships it, and the generated modules
against the .proto sources.

The comparison reads our descriptors from a descriptor set protoc compiles here from proto/,
so it checks the sources themselves; the last test checks the generated modules (which
register in zooserve's own descriptor pool, so tritonclient's can be imported beside them)
against those sources."""

from __future__ import annotations

import filecmp
import subprocess
import sys

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from tritonclient.grpc import model_config_pb2 as triton_config
from tritonclient.grpc import service_pb2 as triton_service

from tests.helpers.paths import ROOT

PROTO = ROOT / "proto"
GENERATED = ROOT / "zooserve" / "protocol" / "generated"


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> descriptor_pool.DescriptorPool:
    # protoc runs in a process of its own: in-process it can crash once TensorFlow (loaded by
    # other test modules) has brought its own copy of the protobuf C++ library.
    out = tmp_path_factory.mktemp("descriptors") / "set.pb"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}",
                    f"--descriptor_set_out={out}", "--include_imports",
                    str(PROTO / "grpc_service.proto")], check=True)
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        pool.Add(file)
    return pool


def _messages(pool, file_name):
    def walk(message):
        yield message
        for nested in message.nested_types:
            yield from walk(nested)

    for message in pool.FindFileByName(file_name).message_types_by_name.values():
        yield from walk(message)


def _theirs(full_name):
    for module in (triton_service, triton_config):
        try:
            return module.DESCRIPTOR.pool.FindMessageTypeByName(full_name)
        except KeyError:
            continue
    raise KeyError(full_name)


def _kind(field):
    target = field.message_type or field.enum_type
    return (field.type, field.is_repeated, target.full_name if target else None)


@pytest.mark.parametrize("file_name", ["grpc_service.proto", "model_config.proto"])
def test_every_field_matches_tritonclient(ours, file_name):
    checked = 0
    for message in _messages(ours, file_name):
        theirs = _theirs(message.full_name)
        for field in message.fields:
            assert field.name in theirs.fields_by_name, f"{message.full_name}.{field.name}"
            reference = theirs.fields_by_name[field.name]
            assert field.number == reference.number, f"{message.full_name}.{field.name}"
            assert _kind(field) == _kind(reference), f"{message.full_name}.{field.name}"
            checked += 1
    assert checked > 20


def test_enums_match_tritonclient(ours):
    for enum in ours.FindFileByName("model_config.proto").enum_types_by_name.values():
        theirs = triton_config.DESCRIPTOR.enum_types_by_name[enum.name]
        assert {v.name: v.number for v in enum.values} == {
            v.name: v.number for v in theirs.values
        }
    group = ours.FindMessageTypeByName("inference.ModelInstanceGroup").enum_types_by_name["Kind"]
    reference = triton_config.ModelInstanceGroup.DESCRIPTOR.enum_types_by_name["Kind"]
    assert {v.name: v.number for v in group.values} == {
        v.name: v.number for v in reference.values
    }


def test_every_rpc_matches_tritonclient(ours):
    service = ours.FindServiceByName("inference.GRPCInferenceService")
    reference = triton_service.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        theirs = reference.methods_by_name[method.name]
        assert method.input_type.full_name == theirs.input_type.full_name
        assert method.output_type.full_name == theirs.output_type.full_name
    assert {"ModelInfer", "ModelConfig", "ModelStatistics"} <= {m.name for m in service.methods}


def test_generated_modules_match_the_proto_sources(tmp_path):
    subprocess.run([sys.executable, str(PROTO / "generate.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    fresh = sorted(p.name for p in tmp_path.iterdir() if p.suffix in {".py", ".pyi"})
    committed = sorted(p.name for p in GENERATED.iterdir() if p.suffix in {".py", ".pyi"})
    assert fresh == committed
    match, mismatch, errors = filecmp.cmpfiles(tmp_path, GENERATED, fresh, shallow=False)
    assert not mismatch and not errors, f"regenerate with: python proto/generate.py ({mismatch})"
