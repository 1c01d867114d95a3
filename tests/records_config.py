"""The tiny shapes config reading prepared record shards (`config.data.source="records"`),
as the records tests train it."""

import config_files


def config(patterns: dict, rows: int = 0):
  """`patterns` {task: shard glob}; `rows` > 0 sets every task's rows per batch."""
  cfg = config_files.load("tiny_shapes")
  cfg.data.update(dict(source="records", resize_images=True,
                       **{f"{t}_records": (p,) for t, p in patterns.items()}))
  if rows:
    cfg.batch.update(dict(und_rows=rows, text_rows=rows, gen_rows=rows))
  return cfg
