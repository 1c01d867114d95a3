"""The shapes world: scenes of one to three coloured shapes, their pixels and their language.

A scene is a left-to-right list of `Obj(color, shape, box)`; every object is a distinct
(colour, shape) pair, boxes never touch (so each object is one connected blob of one
colour) and x centres differ by at least `min_dx` pixels (so "left of" is unambiguous).
Two layouts (`LAYOUTS`): "columns" puts the n objects of a scene in n equal columns, one
each, with random size and jitter (x within its column, y around the middle); "free"
places them anywhere they fit. Columns keep objects apart and make the picture for a
caption far less ambiguous (where things go follows from the caption up to jitter),
which is what lets the tiny CPU model learn to draw them in minutes.
Everything here is a pure function of an explicit `np.random.Generator` or of the scene,
so the tfds builder (`world.py`) and the detector (`detector.py`) share one
definition of what a red triangle looks like and how it is described.

Held-out combinations: `holdout_pairs(seed)` picks unordered pairs of objects that never
appear together in a training scene (train and validation scenes avoid them); every test
scene contains at least one of them, so test captions are compositions never seen in
training captions, while every single object is seen in training.
"""

import dataclasses
import itertools

import numpy as np

COLORS = {  # name -> RGB; far apart from each other and from the background
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
    "purple": (150, 60, 200),
}
COLOR_NAMES = tuple(COLORS)
SHAPE_NAMES = ("circle", "square", "triangle")
BACKGROUND = (255, 255, 255)
COUNT_WORDS = ("zero", "one", "two", "three")
OBJECTS = tuple(itertools.product(range(len(COLOR_NAMES)), range(len(SHAPE_NAMES))))


@dataclasses.dataclass(frozen=True)
class Obj:
  color: int  # index into COLOR_NAMES
  shape: int  # index into SHAPE_NAMES
  box: tuple[int, int, int, int]  # (x0, y0, x1, y1), end-exclusive pixel bounds

  @property
  def cx(self) -> float:
    return (self.box[0] + self.box[2]) / 2

  @property
  def name(self) -> str:
    return f"{COLOR_NAMES[self.color]} {SHAPE_NAMES[self.shape]}"


# ---------------------------------------------------------------------------------------
# Pixels.


def shape_mask(shape: int, width: int, height: int) -> np.ndarray:
  """[height, width] bool: the shape drawn to fill a width x height box (pixel centres)."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
  if SHAPE_NAMES[shape] == "square":
    return np.ones((height, width), bool)
  if SHAPE_NAMES[shape] == "circle":
    return ((x - width / 2) / (width / 2)) ** 2 + ((y - height / 2) / (height / 2)) ** 2 <= 1
  # Triangle, apex at the top centre, base on the bottom edge.
  return np.abs(x - width / 2) <= (width / 2) * (y / height)


def render(scene: list[Obj], size: int) -> np.ndarray:
  """[size, size, 3] uint8 image of the scene on the plain background."""
  image = np.empty((size, size, 3), np.uint8)
  image[:] = BACKGROUND
  for obj in scene:
    x0, y0, x1, y1 = obj.box
    mask = shape_mask(obj.shape, x1 - x0, y1 - y0)
    image[y0:y1, x0:x1][mask] = COLORS[COLOR_NAMES[obj.color]]
  return image


# ---------------------------------------------------------------------------------------
# Scenes.


def holdout_pairs(seed: int = 0, fraction: float = 0.15) -> frozenset:
  """Unordered object pairs ((c, s), (c, s)) held out of training scenes."""
  pairs = list(itertools.combinations(OBJECTS, 2))
  rng = np.random.default_rng([seed, 7])
  chosen = rng.choice(len(pairs), size=int(round(fraction * len(pairs))), replace=False)
  return frozenset(pairs[i] for i in sorted(chosen))


def _pair(a, b):
  return (a, b) if a <= b else (b, a)


def has_holdout(objects, holdout: frozenset) -> bool:
  return any(_pair(a, b) in holdout for a, b in itertools.combinations(objects, 2))


def _sample_objects(rng, n: int, holdout: frozenset, want_holdout: bool) -> list:
  """n distinct (color, shape) pairs; with/without a held-out pair among them."""
  while True:
    if want_holdout:
      pair = sorted(holdout)[rng.integers(len(holdout))]
      rest = [o for o in OBJECTS if o not in pair]
      objects = list(pair) + [rest[i] for i in rng.choice(len(rest), n - 2, replace=False)]
    else:
      objects = [OBJECTS[i] for i in rng.choice(len(OBJECTS), n, replace=False)]
    if has_holdout(objects, holdout) == want_holdout:
      return [objects[i] for i in rng.permutation(n)]


def _fits(box, boxes, gap: int, min_dx: int) -> bool:
  x0, y0, x1, y1 = box
  for bx0, by0, bx1, by1 in boxes:
    apart = x1 + gap <= bx0 or bx1 + gap <= x0 or y1 + gap <= by0 or by1 + gap <= y0
    if not apart or abs((x0 + x1) - (bx0 + bx1)) < 2 * min_dx:
      return False
  return True


LAYOUTS = ("columns", "free")


def check_layout(layout: str) -> str:
  """`layout` if it is one of `LAYOUTS`, else a ValueError naming it."""
  if layout not in LAYOUTS:
    raise ValueError(f"unknown shapes-world layout {layout!r}; expected one of {LAYOUTS}")
  return layout


def _place_in_columns(rng, n: int, size: int) -> list:
  """n square boxes, box k inside column k of n, at least 1 pixel from its column's edges
  (so neighbours are 2 apart and never touch).

  Sides: from size/4 up to 0.4 size or the column width less 2 (32 px: 8-13 pixels for
  one or two objects, 8-9 for three); y centres within size/8 of the middle.
  """
  edges = [round(k * size / n) for k in range(n + 1)]
  boxes = []
  for c0, c1 in zip(edges, edges[1:]):
    hi = max(4, min(round(0.4 * size), c1 - c0 - 2))
    s = int(rng.integers(min(max(4, size // 4), hi), hi + 1))
    x0 = int(rng.integers(c0 + 1, c1 - 1 - s + 1))
    mid, jitter = (size - s) // 2, size // 8
    y0 = int(rng.integers(max(1, mid - jitter), min(size - 1 - s, mid + jitter) + 1))
    boxes.append((x0, y0, x0 + s, y0 + s))
  return boxes


def _place(rng, n: int, size: int) -> list | None:
  """n square boxes anywhere that do not touch and have distinct x centres, or None."""
  lo, hi = max(4, round(0.25 * size)), max(5, round(0.375 * size))
  gap, min_dx = 2, max(2, size // 8)
  boxes = []
  for _ in range(n):
    for _ in range(50):
      s = int(rng.integers(lo, hi + 1))
      x0, y0 = (int(v) for v in rng.integers(1, size - s, size=2))
      box = (x0, y0, x0 + s, y0 + s)
      if _fits(box, boxes, gap, min_dx):
        boxes.append(box)
        break
    else:
      return None
  return boxes


def layout_boxes(rng: np.random.Generator, n: int, size: int, layout: str = "columns"
                 ) -> list:
  """n boxes left to right in `layout` (what `sample_scene` places its objects in)."""
  check_layout(layout)
  if layout == "columns":
    return _place_in_columns(rng, n, size)
  boxes = None
  while boxes is None:
    boxes = _place(rng, n, size)
  return sorted(boxes, key=lambda b: b[0] + b[2])


def sample_scene(rng: np.random.Generator, size: int, holdout: frozenset,
                 test: bool, layout: str = "columns") -> list[Obj]:
  """A scene sorted left to right. Test scenes have 2-3 objects and a held-out pair."""
  check_layout(layout)
  n = int(rng.choice([2, 3])) if test else int(rng.choice([1, 2, 3], p=[0.2, 0.4, 0.4]))
  objects = _sample_objects(rng, n, holdout, want_holdout=test)
  if layout == "columns":
    boxes = _place_in_columns(rng, n, size)
  else:
    boxes = None
    while boxes is None:
      boxes = _place(rng, n, size)
  scene = [Obj(c, s, b) for (c, s), b in zip(objects, boxes)]
  return sorted(scene, key=lambda o: o.cx)


# ---------------------------------------------------------------------------------------
# Language.


def caption(scene: list[Obj]) -> str:
  """'a red circle to the left of a blue square' (objects in left-to-right order)."""
  return " to the left of ".join(f"a {o.name}" for o in scene)


def parse_caption(text: str) -> list[tuple[str, str]]:
  """Inverse of `caption`: [(color, shape)] left to right; raises ValueError if malformed."""
  out = []
  for part in text.strip().split(" to the left of "):
    words = part.split()
    if len(words) != 3 or words[0] != "a" or words[1] not in COLORS or (
        words[2] not in SHAPE_NAMES):
      raise ValueError(f"not a shapes-world caption: {text!r}")
    out.append((words[1], words[2]))
  return out


def _descriptor(obj: Obj, scene: list[Obj]) -> str:
  """Shortest unique reference: 'circle' if it is the only circle, else 'red circle'."""
  same_shape = sum(o.shape == obj.shape for o in scene)
  return SHAPE_NAMES[obj.shape] if same_shape == 1 else obj.name


def questions(scene: list[Obj], rng: np.random.Generator) -> list[tuple[str, str]]:
  """Question/answer pairs about the scene; every answer is one word."""
  qa = [("how many shapes are there?", COUNT_WORDS[len(scene)])]
  shape = int(rng.integers(len(SHAPE_NAMES)))
  qa.append((f"how many {SHAPE_NAMES[shape]}s are there?",
             COUNT_WORDS[sum(o.shape == shape for o in scene)]))
  for obj in scene:
    if sum(o.shape == obj.shape for o in scene) == 1:
      qa.append((f"what color is the {SHAPE_NAMES[obj.shape]}?", COLOR_NAMES[obj.color]))
    if sum(o.color == obj.color for o in scene) == 1:
      qa.append((f"what shape is the {COLOR_NAMES[obj.color]} one?", SHAPE_NAMES[obj.shape]))
  present = {(o.color, o.shape) for o in scene}
  absent = [o for o in OBJECTS if o not in present]
  obj = scene[int(rng.integers(len(scene)))]
  qa.append((f"is there a {obj.name}?", "yes"))
  c, s = absent[int(rng.integers(len(absent)))]
  qa.append((f"is there a {COLOR_NAMES[c]} {SHAPE_NAMES[s]}?", "no"))
  if len(scene) > 1:
    i, j = (int(v) for v in rng.choice(len(scene), 2, replace=False))
    a, b = _descriptor(scene[i], scene), _descriptor(scene[j], scene)
    relation = ["left", "right"][int(rng.integers(2))]
    truth = (i < j) == (relation == "left")
    qa.append((f"is the {a} {relation} of the {b}?", "yes" if truth else "no"))
  return qa


def description(scene: list[Obj]) -> str:
  """Text-only sentences about the scene (for the text task)."""
  n = len(scene)
  parts = [f"there {'is' if n == 1 else 'are'} {COUNT_WORDS[n]} shape{'s' if n > 1 else ''}."]
  for obj in scene:
    parts.append(f"the {_descriptor(obj, scene)} is {COLOR_NAMES[obj.color]}."
                 if sum(o.shape == obj.shape for o in scene) == 1 else
                 f"there is a {obj.name}.")
  for a, b in zip(scene, scene[1:]):
    parts.append(f"the {_descriptor(a, scene)} is to the left of the {_descriptor(b, scene)}.")
  return " ".join(parts)


def vocabulary() -> list[str]:
  """Every word the captions, questions, answers and descriptions use."""
  words = ["a", "to", "the", "left", "right", "of", "what", "color", "is", "shape", "one",
           "how", "many", "shapes", "are", "there", "yes", "no", "circles", "squares",
           "triangles"]
  return sorted(set(words) | set(COLOR_NAMES) | set(SHAPE_NAMES) | set(COUNT_WORDS))
