"""The binary tensor data extension: the codec alone (body split, raw bytes → tensors,
output flags, raw outputs; fuzzed: every input parses or is a 400), then the real app
in-process (memory queue, real ONNX Runtime workers): binary requests and responses,
mixed JSON and binary inputs, ``binary_data_output``, and each malformed body as a 400
naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.contract.errors import InvalidInputError
from services.gateway.errors import BadRequestError, status_for
from services.gateway.oip_binary import split_body
from services.gateway.oip_codec import encode_outputs, parse_infer
from services.gateway.responses import BinaryTensors, FastJSON
from services.gateway.state import parse_json
from tests.support.inprocess import CLASSIFIER, GENERATOR, stack
from tests.unit.gateway.test_oip_codec import metadata

IMAGE = f"/v2/models/{CLASSIFIER}/infer"
GENERATE = f"/v2/models/{GENERATOR}/infer"
HEADER = "Inference-Header-Content-Length"


def binary_body(doc: dict[str, Any], *arrays: np.ndarray[Any, Any]) -> tuple[bytes, int]:
    """The JSON of ``doc`` followed by ``arrays``' raw bytes, and the JSON's length."""
    head = json.dumps(doc).encode()
    return head + b"".join(a.tobytes() for a in arrays), len(head)


def binary_input(name: str, array: np.ndarray[Any, Any], datatype: str = "FP32") -> dict[str, Any]:
    return {"name": name, "shape": list(array.shape), "datatype": datatype,
            "parameters": {"binary_data_size": array.nbytes}}  # fmt: skip


def parse(
    doc: dict[str, Any], *arrays: np.ndarray[Any, Any], meta: Any = None, rows: int = 4
) -> Any:
    """``doc`` + ``arrays`` as a client sends them, through split and parse."""
    body, length = binary_body(doc, *arrays)
    header, data = split_body(body, str(length))
    return parse_infer(parse_json(header), meta or metadata(), max_rows=rows, binary_data=data)


PIXELS = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)


# The codec alone.


def test_split_body() -> None:
    assert split_body(b'{"a": 1}', None) == (b'{"a": 1}', None)
    assert split_body(b'{"a": 1}', "0") == (b'{"a": 1}', None)  # 0 = JSON only (Triton)
    header, data = split_body(b'{"a": 1}\x01\x02', "8")
    assert header == b'{"a": 1}' and data is not None and bytes(data) == b"\x01\x02"
    header, data = split_body(b"{}", " 2 ")
    assert header == b"{}" and data is not None and bytes(data) == b""
    for value in ["abc", "-1", "1.5", "+2", "", "2_0", "\u0662", "0x10"]:
        with pytest.raises(BadRequestError, match="must be a non-negative integer"):
            split_body(b"{}", value)
    with pytest.raises(BadRequestError, match="3 bytes of JSON, but the body has only 2"):
        split_body(b"{}", "3")


def test_binary_input_equals_json_input_and_is_a_view_on_the_body() -> None:
    parsed = parse({"inputs": [binary_input("image", PIXELS)]}, PIXELS)
    as_json = parse_infer(
        {"inputs": [{"name": "image", "shape": [2, 1, 2, 2], "datatype": "FP32",
                     "data": PIXELS.ravel().tolist()}]}, metadata(), max_rows=4,
    )  # fmt: skip
    array = parsed.inputs["image"]
    np.testing.assert_array_equal(array, as_json.inputs["image"])
    assert array.dtype == np.dtype("<f4") and array.shape == (2, 1, 2, 2)
    assert not array.flags.writeable and array.base is not None  # frombuffer, no copy


def test_mixed_json_and_binary_inputs_take_bytes_in_input_order() -> None:
    latent = np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 4)
    labels = np.array([2, 1], dtype=np.int64)
    json_label = {"name": "label", "shape": [2], "datatype": "INT64", "data": [2, 1]}
    meta = metadata("generate")
    mixed = parse({"inputs": [binary_input("latent", latent), json_label]}, latent, meta=meta)
    both = parse(
        {"inputs": [binary_input("label", labels, "INT64"), binary_input("latent", latent)]},
        labels, latent, meta=meta,
    )  # fmt: skip
    for parsed in (mixed, both):
        np.testing.assert_array_equal(parsed.inputs["latent"], latent)
        np.testing.assert_array_equal(parsed.inputs["label"], labels)


def test_output_flags() -> None:
    plain = parse({"inputs": [binary_input("image", PIXELS)]}, PIXELS)
    assert plain.binary_outputs == frozenset() and plain.outputs is None
    everything = parse(
        {"inputs": [binary_input("image", PIXELS)], "parameters": {"binary_data_output": True}},
        PIXELS,
    )
    assert everything.binary_outputs == {"logits", "probabilities"}
    assert "binary_data_output" not in everything.parameters  # not the workers' business
    chosen = parse(
        {"inputs": [binary_input("image", PIXELS)], "parameters": {"binary_data_output": True},
         "outputs": [{"name": "logits", "parameters": {"binary_data": False}},
                     {"name": "probabilities"}]},
        PIXELS,
    )  # fmt: skip
    assert chosen.outputs == ("logits", "probabilities")
    assert chosen.binary_outputs == {"probabilities"}
    one = parse_infer(
        {"inputs": [{"name": "image", "shape": [1, 1, 2, 2], "datatype": "FP32",
                     "data": [0.0] * 4}],
         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]},
        metadata(), max_rows=4,
    )  # fmt: skip
    assert one.binary_outputs == {"logits"}  # a JSON request may ask for binary outputs


def test_encode_outputs_binary_and_json() -> None:
    logits = np.array([[np.nan, np.inf, 1.0]], np.float32)  # raw bytes carry any value
    probabilities = np.full((1, 3), 0.5, np.float32)
    outputs = {"logits": logits, "probabilities": probabilities}
    tensors, raw = encode_outputs(outputs, metadata(), None, frozenset({"logits"}))
    assert tensors == [
        {"name": "logits", "datatype": "FP32", "shape": [1, 3],
         "parameters": {"binary_data_size": 12}},
        {"name": "probabilities", "datatype": "FP32", "shape": [1, 3], "data": [0.5] * 3},
    ]  # fmt: skip
    assert len(raw) == 1 and raw[0].tobytes() == logits.tobytes()
    response = BinaryTensors({"outputs": tensors}, raw, finite=[probabilities])
    length = int(response.headers[HEADER])
    assert response.headers["content-type"] == "application/octet-stream"
    assert json.loads(response.body[:length]) == {"outputs": tensors}
    assert response.body[length:] == logits.tobytes()
    as_json = {"outputs": [{"name": "logits", "data": logits.ravel().tolist()}]}
    with pytest.raises(ValueError, match="not JSON compliant"):
        FastJSON(as_json, finite=[logits])  # the same values as JSON: refused
    with pytest.raises(ValueError, match="not JSON compliant"):
        BinaryTensors(as_json, [], finite=[logits])
    # A null from elsewhere in the content: the arrays are checked, and they are finite.
    fine = {"id": None, "outputs": [{"data": probabilities.ravel().tolist()}]}
    assert json.loads(FastJSON(fine, finite=[probabilities]).body) == fine
    assert json.loads(BinaryTensors(fine, [], finite=[probabilities]).body) == fine


def _image(**parameters: Any) -> dict[str, Any]:
    return {"name": "image", "shape": [2, 1, 2, 2], "datatype": "FP32", **parameters}


SIZE = {"parameters": {"binary_data_size": 32}}
BAD: list[tuple[str, dict[str, Any], bytes, str]] = [
    # (case, JSON header, bytes after it, fragment of the message)
    ("data and binary", {"inputs": [_image(data=[0.0] * 8, **SIZE)]}, PIXELS.tobytes(),
     "inputs[0] (image): both data and parameters.binary_data_size"),
    ("size not shape x itemsize", {"inputs": [_image(parameters={"binary_data_size": 16})]},
     PIXELS.tobytes()[:16], "binary_data_size: 16 bytes, shape [2, 1, 2, 2] of FP32 needs 32"),
    ("size past the data", {"inputs": [_image(**SIZE)]}, PIXELS.tobytes()[:20],
     "binary_data_size: 32 bytes, but only 20 bytes of binary data are left"),
    ("bytes left over", {"inputs": [_image(**SIZE)]}, PIXELS.tobytes() + b"\0" * 4,
     "body: 4 bytes after the JSON header and the inputs' binary_data_size"),
    ("bytes but no binary input",
     {"inputs": [_image(data=PIXELS.ravel().tolist())]}, b"\0" * 4, "body: 4 bytes after"),
    ("size negative", {"inputs": [_image(parameters={"binary_data_size": -1})]}, b"",
     "binary_data_size: must be a non-negative integer"),
    ("size a bool", {"inputs": [_image(parameters={"binary_data_size": True})]}, b"",
     "binary_data_size: must be a non-negative integer"),
    ("size a string", {"inputs": [_image(parameters={"binary_data_size": "32"})]}, b"",
     "binary_data_size: must be a non-negative integer"),
    ("parameters not an object", {"inputs": [_image(parameters=[32])]}, b"",
     "inputs[0] (image).parameters: must be an object"),
    ("shared memory", {"inputs": [_image(parameters={"shared_memory_region": "r"})]}, b"",
     "shared memory extension is not supported"),
    ("BYTES input", {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                 "parameters": {"binary_data_size": 5}}]},
     b"\x01\0\0\0a", "inputs[0] (image).datatype: BYTES (string) tensors are not supported"),
    ("shape checked before the bytes",
     {"inputs": [{**_image(**SIZE), "shape": [2, 1, 2, 3]}]}, b"\0" * 32, "axis 3 must be 2"),
    ("NaN in binary input", {"inputs": [_image(**SIZE)]},
     np.full(8, np.nan, np.float32).tobytes(), "NaN"),
    ("wrong datatype", {"inputs": [{**_image(**SIZE), "datatype": "INT64",
                                    "parameters": {"binary_data_size": 64}}]},
     b"\0" * 64, "datatype INT64, expected FP32"),
    ("rows over the limit", {"inputs": [{**_image(), "shape": [5, 1, 2, 2],
                                         "parameters": {"binary_data_size": 80}}]},
     b"\0" * 80, "at most 4"),
    ("binary_data_output not a bool",
     {"inputs": [_image(**SIZE)], "parameters": {"binary_data_output": 1}}, PIXELS.tobytes(),
     "parameters.binary_data_output: must be true or false"),
    ("binary_data not a bool",
     {"inputs": [_image(**SIZE)], "outputs": [{"name": "logits",
                                               "parameters": {"binary_data": "yes"}}]},
     PIXELS.tobytes(), "outputs[0] (logits).parameters.binary_data: must be true or false"),
    ("classification", {"inputs": [_image(**SIZE)], "outputs": [
        {"name": "logits", "parameters": {"classification": 2}}]}, PIXELS.tobytes(),
     "classification extension is not supported"),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "data", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_binary_requests_say_what_is_wrong(
    doc: dict[str, Any], data: bytes, message: str
) -> None:
    head = json.dumps(doc).encode()
    header, rest = split_body(head + data, str(len(head)))
    with pytest.raises((BadRequestError, InvalidInputError)) as caught:
        parse_infer(parse_json(header), metadata(), max_rows=4, binary_data=rest)
    assert message in str(caught.value)
    assert status_for(caught.value) == 400


def test_binary_input_without_the_header_is_refused() -> None:
    with pytest.raises(BadRequestError, match="needs the header Inference-Header-Content-Length"):
        parse_infer({"inputs": [_image(**SIZE)]}, metadata(), max_rows=4)
    # An empty binary tensor needs no bytes: the header may be left out (as Triton).
    # (Past the binary data, the validator refuses the unknown input.)
    with pytest.raises(InvalidInputError, match=r"unknown input\(s\) \['x'\]"):
        parse_infer(
            {"inputs": [{"name": "x", "shape": [0], "datatype": "FP32",
                         "parameters": {"binary_data_size": 0}}, _image(data=[0.0] * 8)]},
            metadata(), max_rows=4,
        )  # fmt: skip


def test_bool_binary_data_is_bytes_zero_or_one() -> None:
    with pytest.raises(BadRequestError, match="BOOL binary data must be bytes 0 or 1"):
        parse(
            {"inputs": [{"name": "image", "shape": [2], "datatype": "BOOL",
                         "parameters": {"binary_data_size": 2}}]},
            np.array([1, 2], np.uint8),
        )  # fmt: skip
    with pytest.raises(InvalidInputError, match="datatype BOOL, expected FP32"):
        parse(
            {"inputs": [{"name": "image", "shape": [1, 1, 2, 2], "datatype": "BOOL",
                         "parameters": {"binary_data_size": 4}}]},
            np.array([1, 0, 1, 0], np.uint8),
        )  # fmt: skip


def test_huge_shape_with_no_data_is_refused() -> None:
    doc = {"inputs": [{"name": "image", "shape": [0, 2**62, 2**62], "datatype": "FP32",
                       "parameters": {"binary_data_size": 0}}]}  # fmt: skip
    with pytest.raises(BadRequestError, match="too large"):
        parse(doc)


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
small_ints = st.integers(-2, 40) | st.sampled_from([2**31, 2**62, 2**64])
fuzz_parameters = st.dictionaries(
    st.sampled_from(["binary_data_size", "binary_data", "shared_memory_region", "x"]),
    small_ints | st.booleans() | st.text(max_size=4) | st.none(),
    max_size=2,
)
fuzz_tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["image", "latent", "label", "x"]),
        "shape": st.lists(st.integers(0, 5), max_size=5) | st.just([0, 2**62, 2**62]),
        "datatype": st.sampled_from(["FP32", "INT64", "BOOL", "FP16", "BYTES", "UINT8", "X"]),
    },
    optional={"parameters": fuzz_parameters | st.integers(),
              "data": st.lists(st.floats() | st.integers(-3, 3), max_size=10)},
)  # fmt: skip
fuzz_docs = st.fixed_dictionaries(
    {"inputs": st.lists(fuzz_tensors, max_size=3)},
    optional={
        "parameters": st.dictionaries(
            st.sampled_from(["binary_data_output", "seed", "count"]),
            st.booleans() | small_ints, max_size=3,
        ),
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["logits", "probabilities", "image", "zz"])},
                optional={"parameters": fuzz_parameters | st.text(max_size=3)},
            ),
            max_size=3,
        ),
    },
)  # fmt: skip


def _mostly(draw: st.DrawFn, right: Any, *wrong: Any) -> Any:
    """``right`` seven times in ten, else one of ``wrong``."""
    pick = draw(st.integers(0, 9))
    return right if pick < 7 else wrong[pick % len(wrong)]


@st.composite
def near_valid(draw: st.DrawFn) -> tuple[dict[str, Any], bytes, str]:
    """A binary classify request that is right, or wrong in a few bytes or one field."""
    rows = draw(st.integers(0, 6))
    shape = _mostly(draw, [rows, 1, 2, 2], [rows, 1, 2, 3], [rows, 4], [rows])
    datatype = _mostly(draw, "FP32", "FP16", "BOOL", "INT64")
    itemsize = {"FP32": 4, "FP16": 2, "BOOL": 1, "INT64": 8}[datatype]
    size = int(np.prod(shape)) * itemsize + _mostly(draw, 0, -1, 1, 4)
    tensor = {"name": "image", "shape": shape, "datatype": datatype,
              "parameters": {"binary_data_size": size}}  # fmt: skip
    doc: dict[str, Any] = {"inputs": [tensor]}
    if draw(st.booleans()):
        doc["parameters"] = {"binary_data_output": _mostly(draw, True, False, 1)}
    value = _mostly(draw, np.float32(3.0), np.float32(np.nan), np.float32(-np.inf))
    data = np.full(max(size, 0) // 4 + 1, value, np.float32).tobytes()[: max(size, 0)]
    data += _mostly(draw, b"", b"\x00", b"\x02" * 3)
    header = json.dumps(doc).encode()
    length = _mostly(draw, str(len(header)), str(len(header) + 1), "0", "x")
    return doc, data, length


@FUZZ
@given(
    doc=fuzz_docs,
    data=st.binary(max_size=96),
    header=st.none() | st.integers(-3, 400).map(str) | st.text(max_size=4),
    task=st.sampled_from(["classify", "generate"]),
)
def test_fuzzed_binary_bodies_parse_or_are_a_400(
    doc: dict[str, Any], data: bytes, header: str | None, task: str
) -> None:
    head = json.dumps(doc).encode()
    # Mostly the right header length, sometimes anything.
    value = str(len(head)) if header is None or header == "" else header
    _parses_or_400(head + data, value, task)


@FUZZ
@given(request=near_valid())
def test_near_valid_binary_requests_parse_or_are_a_400(
    request: tuple[dict[str, Any], bytes, str],
) -> None:
    doc, data, length = request
    parsed = _parses_or_400(json.dumps(doc).encode() + data, length, "classify")
    if parsed is not None:
        image = parsed.inputs["image"]
        assert image.shape[1:] == (1, 2, 2) and 1 <= image.shape[0] <= 4
        assert image.dtype == np.float32 and bool(np.isfinite(image).all())


def _parses_or_400(body: bytes, header_length: str, task: str) -> Any:
    """The parsed request, or None after a 400 error (anything else fails the test)."""
    try:
        json_part, rest = split_body(body, header_length)
        return parse_infer(parse_json(json_part), metadata(task), max_rows=4, binary_data=rest)
    except (BadRequestError, InvalidInputError) as exc:
        assert status_for(exc) == 400
        return None


# The real app, in-process.


def post_binary(
    client: Any, path: str, doc: dict[str, Any], *arrays: np.ndarray[Any, Any]
) -> httpx.Response:
    body, length = binary_body(doc, *arrays)
    response: httpx.Response = client.post(path, content=body, headers={HEADER: str(length)})
    return response


def tensors_of(response: httpx.Response) -> dict[str, np.ndarray[Any, Any]]:
    """A response's output tensors, binary or JSON, as a client reads them."""
    assert response.status_code == 200, response.text
    length = response.headers.get(HEADER)
    content = response.content
    header = json.loads(content[: int(length)] if length else content)
    offset = int(length or 0)
    result = {}
    for output in header["outputs"]:
        dtype = {"FP32": np.float32, "INT64": np.int64}[output["datatype"]]
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            result[output["name"]] = np.asarray(output["data"], dtype).reshape(output["shape"])
        else:
            raw = content[offset : offset + size]
            offset += size
            result[output["name"]] = np.frombuffer(raw, dtype).reshape(output["shape"])
    assert offset == len(content) or not length
    return result


def json_image(pixels: np.ndarray[Any, Any], **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "image", "shape": list(pixels.shape), "datatype": "FP32",
                        "data": pixels.ravel().tolist()}], **extra}  # fmt: skip


def test_classifier_binary_request_and_response_equal_json(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER]) as gw:
        http = gw.client
        assert "binary_tensor_data" in http.get("/v2").json()["extensions"]
        infer_spec = http.get("/openapi.json").json()["paths"]["/v2/models/{model}/infer"]
        for where in (infer_spec["post"]["requestBody"], infer_spec["post"]["responses"]["200"]):
            assert set(where["content"]) == {"application/json", "application/octet-stream"}
        expected = tensors_of(http.post(IMAGE, json=json_image(PIXELS)))
        # tritonclient's defaults: binary inputs, every output requested with binary_data.
        outputs = [
            {"name": "probabilities", "parameters": {"binary_data": True}},
            {"name": "logits", "parameters": {"binary_data": True}},
        ]
        doc = {"id": "b-1", "inputs": [binary_input("image", PIXELS)], "outputs": outputs}
        response = post_binary(http, IMAGE, doc, PIXELS)
        assert response.headers["content-type"] == "application/octet-stream"
        length = int(response.headers[HEADER])
        header = json.loads(response.content[:length])
        assert header["id"] == "b-1" and header["model_name"] == CLASSIFIER
        assert [o["name"] for o in header["outputs"]] == ["probabilities", "logits"]
        assert all("data" not in o for o in header["outputs"])
        assert len(response.content) == length + 2 * 2 * 3 * 4
        got = tensors_of(response)
        for name in ("logits", "probabilities"):
            np.testing.assert_array_equal(got[name], expected[name])
        # Binary inputs, JSON outputs: the answer is plain JSON.
        plain = post_binary(http, IMAGE, {"inputs": [binary_input("image", PIXELS)]}, PIXELS)
        assert plain.headers["content-type"] == "application/json"
        assert HEADER.lower() not in plain.headers
        as_json = http.post(IMAGE, json=json_image(PIXELS)).json()
        assert plain.json()["outputs"] == as_json["outputs"]


def test_binary_outputs_for_a_json_request_and_per_output_override(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER]) as gw:
        http = gw.client
        expected = tensors_of(http.post(IMAGE, json=json_image(PIXELS)))
        mixed = http.post(IMAGE, json=json_image(
            PIXELS, parameters={"binary_data_output": True},
            outputs=[{"name": "logits"}, {"name": "probabilities",
                                          "parameters": {"binary_data": False}}]))  # fmt: skip
        length = int(mixed.headers[HEADER])
        outputs = json.loads(mixed.content[:length])["outputs"]
        assert outputs[0]["parameters"] == {"binary_data_size": 24} and "data" not in outputs[0]
        assert "parameters" not in outputs[1] and len(outputs[1]["data"]) == 6
        got = tensors_of(mixed)
        for name in ("logits", "probabilities"):
            np.testing.assert_array_equal(got[name], expected[name])


def test_generator_mixed_inputs_and_binary_data_output(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[GENERATOR]) as gw:
        http = gw.client
        meta = http.get(f"/v2/models/{GENERATOR}").json()
        latent_size = meta["inputs"][0]["shape"][1]
        latent = np.linspace(-1, 1, 3 * latent_size, dtype=np.float32).reshape(3, latent_size)
        label = {"name": "label", "shape": [3], "datatype": "INT64", "data": [0, 1, 2]}
        as_json = http.post(GENERATE, json={"inputs": [
            {"name": "latent", "shape": [3, latent_size], "datatype": "FP32",
             "data": latent.ravel().tolist()}, label]})  # fmt: skip
        mixed = post_binary(http, GENERATE, {
            "inputs": [binary_input("latent", latent), label],
            "parameters": {"binary_data_output": True}}, latent)  # fmt: skip
        assert mixed.headers["content-type"] == "application/octet-stream"
        np.testing.assert_array_equal(tensors_of(mixed)["image"], tensors_of(as_json)["image"])
        # No tensors, only seed and count: binary_data_output applies all the same.
        seeded = {"inputs": [], "parameters": {"seed": 7, "count": 64}}
        expected = tensors_of(http.post(GENERATE, json=seeded))["image"]
        seeded["parameters"]["binary_data_output"] = True
        response = http.post(GENERATE, json=seeded)
        assert response.headers["content-type"] == "application/octet-stream"
        image = tensors_of(response)["image"]
        assert image.shape == (64, 1, 2, 2)
        np.testing.assert_array_equal(image, expected)


HTTP_BAD: list[tuple[str, bytes, dict[str, str], str]] = [
    # (case, body, headers, fragment of the message)
    ("header not an integer", b"{}", {HEADER: "twelve"},
     "Inference-Header-Content-Length: must be a non-negative integer"),
    ("header negative", b"{}", {HEADER: "-2"}, "must be a non-negative integer"),
    ("header past the body", b'{"inputs": []}', {HEADER: "999"},
     "999 bytes of JSON, but the body has only 14"),
    ("header cuts the JSON", b'{"inputs": []}', {HEADER: "5"}, "JSON header"),
    ("compressed body", b"\x1f\x8b\x08\x00", {"Content-Encoding": "gzip"},
     "header Content-Encoding: 'gzip' bodies are not supported"),
    ("binary without the header",
     json.dumps({"inputs": [_image(**SIZE)]}).encode() + PIXELS.tobytes(), {}, "not valid JSON"),
]  # fmt: skip


def test_bad_binary_bodies_over_http_are_400s(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER]) as gw:
        http = gw.client
        for case, body, headers, message in HTTP_BAD:
            response = http.post(IMAGE, content=body, headers=headers)
            assert response.status_code == 400, (case, response.text)
            assert set(response.json()) == {"error"} and message in response.json()["error"], (
                case,
                response.text,
            )
        # The in-process classifier takes 2x2 images of 0..16, as metadata() does, but
        # up to AXON_MAX_ROWS (256) rows, not 4.
        for case, doc, data, message in (c for c in BAD if c[0] != "rows over the limit"):
            head = json.dumps(doc).encode()
            response = http.post(IMAGE, content=head + data, headers={HEADER: str(len(head))})
            assert response.status_code == 400, (case, response.text)
            assert message in response.json()["error"], (case, response.text)
            assert "Traceback" not in response.text
        # Still serving.
        assert http.post(IMAGE, json=json_image(PIXELS)).status_code == 200
