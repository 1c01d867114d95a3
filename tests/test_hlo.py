"""Finding all-to-all / collective-permute instructions in compiled HLO text."""

from jf_jax.parallel import hlo

_TEXT = """HloModule jit_step, entry_computation_layout={()->()}

%body.1 (p: (f32[4,8])) -> (f32[4,8]) {
  %grad = f32[16,8]{1,0} fusion(%p), kind=kLoop, metadata={op_name="jit(step)/while/body/transpose(jvp(Model.apply))/dense/dot_general"}
  %slice.1 = f32[4,8]{1,0} slice(%grad), slice={[4:8], [0:8]}
  %collective-permute-start = (f32[4,8]{1,0}, f32[4,8]{1,0}, u32[], u32[]) collective-permute-start(%slice.1), channel_id=1, source_target_pairs={{0,1},{1,0}}
  %collective-permute-done = f32[4,8]{1,0} collective-permute-done(%collective-permute-start)
  %rows = s32[1,32]{1,0} dynamic-slice(%p), metadata={op_name="jit(step)/while/body/jit(dynamic_index_in_dim)/dynamic_slice"}
  ROOT %all-to-all.3 = (s32[1,32]{1,0}, s32[1,32]{1,0}) all-to-all(%rows, %rows), channel_id=2, metadata={op_name="jit(step)/while/body/jit(dynamic_index_in_dim)/dynamic_slice"}
}

ENTRY %main.2 (a: f32[4,8]) -> f32[4,8] {
  %a = f32[4,8]{1,0} parameter(0)
  ROOT %collective-permute.7 = f32[4,8]{1,0} collective-permute(%a), channel_id=3, source_target_pairs={{0,1},{1,0}}
}
"""


def test_moves_found_with_their_origin():
  moves = hlo.collective_moves(_TEXT)
  assert [(m.kind, m.computation) for m in moves] == [
      ("collective-permute", "body.1"), ("all-to-all", "body.1"),
      ("collective-permute", "main.2")]
  # The permute without metadata takes the op name two operands up (slice -> fusion).
  assert moves[0].op_name.endswith("transpose(jvp(Model.apply))/dense/dot_general")
  assert moves[1].shape == "(s32[1,32]{1,0}, s32[1,32]{1,0})"
  assert moves[2].op_name == ""  # a parameter has no op name


def test_outside_model_keeps_batch_moves_and_unknown_ones():
  outside = hlo.outside_model(hlo.collective_moves(_TEXT))
  assert [m.kind for m in outside] == ["all-to-all", "collective-permute"]
