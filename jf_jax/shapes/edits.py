"""Image edits in the shapes world, with exact ground truth: source scene + instruction ->
target scene.

Five edit types (`EDIT_TYPES`), each an instruction in the world's words (the first
object named is always spelled out in full, "the red circle": every (colour, shape) is
unique in a scene):

  recolor  "make the red circle blue"                  one object changes colour
  remove   "remove the red circle"                     one object goes (2-3 objects)
  add      "add a blue square on the left" / "right"   a new object at one end (1-2)
  swap     "swap the red circle and the blue square"   two objects trade places (2-3)
  move     "move the red circle to the right" / "left" an end object goes to the
                                                       other end (3 objects)

Objects that stay keep their box (recolor, remove) or trade boxes (swap, move: the
boxes stay where they are and the objects change slots); `add` lays the n + 1 objects
out afresh in the scene's layout. `apply_instruction` reads an instruction and applies
it to a [(colour, shape)] list left to right: the judge of the edit score (`scores.py`
`edit_scores`) and of the generator's own test, independent of how `make_edit` builds
the target.

Held-out combinations, as for captions: train and validation edits never produce a
target holding a held-out object pair (`scene.holdout_pairs`; their sources never hold
one either); every test edit starts from a test scene (which holds one) and ends in a
target that holds one, so each test target is a composition never seen in training.
"""

import dataclasses

import numpy as np

from jf_jax.shapes import scene as shapes_scene

EDIT_TYPES = ("recolor", "remove", "add", "swap", "move")
# Words the instructions add to the world's vocabulary (`vocabulary.py`: after the
# others, so the tokens of captions and questions keep their ids).
EDIT_WORDS = ("make", "remove", "add", "on", "swap", "and", "move")
_SIDES = ("left", "right")
_ATTEMPTS = 50


@dataclasses.dataclass(frozen=True)
class Edit:
  kind: str  # one of EDIT_TYPES
  instruction: str
  source: tuple[shapes_scene.Obj, ...]
  target: tuple[shapes_scene.Obj, ...]

  @property
  def target_pairs(self) -> list[tuple[str, str]]:
    """[(colour, shape)] of the target, left to right (what the detector should read)."""
    return pairs(self.target)


def pairs(objects) -> list[tuple[str, str]]:
  """[(colour name, shape name)] of a scene, left to right."""
  return [(shapes_scene.COLOR_NAMES[o.color], shapes_scene.SHAPE_NAMES[o.shape])
          for o in objects]


def possible(kind: str, n: int) -> bool:
  """Whether an edit of `kind` applies to a scene of n objects (the world holds 1-3)."""
  return {"recolor": n >= 1, "remove": n >= 2, "add": n <= 2, "swap": n >= 2,
          "move": n >= 3}[kind]


def _in_slots(objects, boxes) -> tuple[shapes_scene.Obj, ...]:
  return tuple(shapes_scene.Obj(o.color, o.shape, b) for o, b in zip(objects, boxes))


def _draw(rng, kind: str, scene: list, size: int, layout: str):
  """(instruction, target objects left to right) of one random edit of `kind`."""
  n = len(scene)
  present = {(o.color, o.shape) for o in scene}
  if kind == "recolor":
    i = int(rng.integers(n))
    obj = scene[i]
    colors = [c for c in range(len(shapes_scene.COLOR_NAMES))
              if c != obj.color and (c, obj.shape) not in present]
    color = colors[int(rng.integers(len(colors)))]
    target = list(scene)
    target[i] = shapes_scene.Obj(color, obj.shape, obj.box)
    return f"make the {obj.name} {shapes_scene.COLOR_NAMES[color]}", target
  if kind == "remove":
    i = int(rng.integers(n))
    return f"remove the {scene[i].name}", scene[:i] + scene[i + 1:]
  if kind == "add":
    absent = [o for o in shapes_scene.OBJECTS if o not in present]
    color, shape = absent[int(rng.integers(len(absent)))]
    side = _SIDES[int(rng.integers(2))]
    new = shapes_scene.Obj(color, shape, (0, 0, 0, 0))
    order = [new] + scene if side == "left" else scene + [new]
    boxes = shapes_scene.layout_boxes(rng, n + 1, size, layout)
    return f"add a {new.name} on the {side}", list(_in_slots(order, boxes))
  if kind == "swap":
    i, j = sorted(int(v) for v in rng.choice(n, 2, replace=False))
    order = list(scene)
    order[i], order[j] = scene[j], scene[i]
    return (f"swap the {scene[i].name} and the {scene[j].name}",
            list(_in_slots(order, [o.box for o in scene])))
  if kind == "move":
    if rng.integers(2):  # the leftmost goes to the right end
      order, text = scene[1:] + scene[:1], f"move the {scene[0].name} to the right"
    else:
      order, text = scene[-1:] + scene[:-1], f"move the {scene[-1].name} to the left"
    return text, list(_in_slots(order, [o.box for o in scene]))
  raise ValueError(f"unknown edit type {kind!r}; expected one of {EDIT_TYPES}")


def make_edit(rng: np.random.Generator, scene: list, size: int, holdout: frozenset,
              test: bool, kind: str | None = None, layout: str = "columns") -> Edit:
  """One edit of `scene` (an Obj list left to right, a `world.py` example's scene).

  `kind`: the edit type (None: drawn uniformly among those that apply; when the drawn
  type cannot meet the held-out rule after a few draws, another that can). The target
  holds a held-out pair exactly when `test` (module docstring). Raises ValueError when
  `kind` does not apply to the scene or cannot meet the rule.
  """
  if kind is not None and not possible(kind, len(scene)):
    raise ValueError(f"a {kind!r} edit does not apply to a scene of {len(scene)} objects")
  kinds = [k for k in EDIT_TYPES if possible(k, len(scene))]
  first = kind or kinds[int(rng.integers(len(kinds)))]
  for k in [first] + ([] if kind else [k for k in kinds if k != first]):
    for _ in range(_ATTEMPTS):
      text, target = _draw(rng, k, list(scene), size, layout)
      held = shapes_scene.has_holdout([(o.color, o.shape) for o in target], holdout)
      if held == test:
        return Edit(k, text, tuple(scene), tuple(target))
  raise ValueError(f"no edit of the scene {pairs(scene)} meets the split's held-out rule")


def apply_instruction(objects: list[tuple[str, str]], instruction: str
                      ) -> list[tuple[str, str]]:
  """The [(colour, shape)] list left to right after an instruction (the judge).

  Raises ValueError on an instruction that is not one of the five forms or that names an
  object the list does not hold.
  """
  words = instruction.strip().lower().split()
  objects = list(objects)

  def find(color: str, shape: str) -> int:
    if (color, shape) not in objects:
      raise ValueError(f"{instruction!r} names a {color} {shape}, not in {objects}")
    return objects.index((color, shape))

  if len(words) == 5 and words[:2] == ["make", "the"]:
    objects[find(words[2], words[3])] = (words[4], words[3])
    return objects
  if len(words) == 4 and words[:2] == ["remove", "the"]:
    del objects[find(words[2], words[3])]
    return objects
  if len(words) == 7 and words[:2] == ["add", "a"] and words[4:6] == ["on", "the"]:
    new = (words[2], words[3])
    if words[6] in _SIDES:
      return [new] + objects if words[6] == "left" else objects + [new]
  if len(words) == 8 and words[:2] == ["swap", "the"] and words[4:6] == ["and", "the"]:
    i, j = find(words[2], words[3]), find(words[6], words[7])
    objects[i], objects[j] = objects[j], objects[i]
    return objects
  if len(words) == 7 and words[:2] == ["move", "the"] and words[4:6] == ["to", "the"]:
    obj = objects.pop(find(words[2], words[3]))
    if words[6] in _SIDES:
      return [obj] + objects if words[6] == "left" else objects + [obj]
  raise ValueError(f"not a shapes-world edit instruction: {instruction!r}")


def kind_of(instruction: str) -> str:
  """The edit type an instruction's first word names ('make' -> recolor)."""
  first = instruction.strip().lower().split()[0] if instruction.strip() else ""
  return {"make": "recolor", "remove": "remove", "add": "add", "swap": "swap",
          "move": "move"}.get(first, "other")
