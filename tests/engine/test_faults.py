"""The test-only fault wrapper on a backend without a hook of its own (the scripted engine):
the request fails at its stream after N tokens, in the contract's error path."""

from __future__ import annotations

from insieme.engine import faults
from insieme.engine.fake import FakeEngine
from insieme.engine.types import FinishReason, GenerationRequest, SamplingParams


async def test_a_fault_ends_the_stream_after_n_tokens() -> None:
    engine = faults.FaultInjectingEngine(FakeEngine("one two three four five six"))
    await engine.start()
    token = faults._CURRENT.set(faults.Fault(3))  # what FaultHeader does for the request
    try:
        stream = await engine.submit(GenerationRequest("f", [1, 2, 3], SamplingParams(), n=2))
    finally:
        faults._CURRENT.reset(token)
    outputs = [output async for output in stream]
    for index in (0, 1):
        mine = [o for o in outputs if o.index == index]
        assert [o.token is not None for o in mine] == [True, True, True, False]
        assert mine[-1].finish_reason is FinishReason.ERROR
        assert "injected fault" in (mine[-1].error or "")
    # Without a fault the same engine answers normally.
    clean = await engine.submit(GenerationRequest("g", [1], SamplingParams()))
    assert [o async for o in clean][-1].finish_reason is FinishReason.STOP
    await engine.stop()


def test_the_header_parses() -> None:
    assert faults.Fault.parse("4") == faults.Fault(4)
    assert faults.Fault.parse("engine:2") == faults.Fault(2, fatal=True)
