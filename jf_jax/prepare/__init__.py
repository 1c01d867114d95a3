"""`python -m jf_jax.prepare {gen,und,text,edit}`: source data -> ArrayRecord shards + index.

inputs.py   what the input patterns hold, as units of work (a tar, a Parquet row group,
            a chunk of a small file list) and the raw examples of each unit
examples.py a raw example -> the record of `data/record_format.py` (image re-encoded)
shards.py   one shard: its units' records written locally, published atomically, with
            a done-marker holding its counts (what makes a killed run resumable)
run.py      the whole job: shard plan, worker processes, progress, the PREFIX.json index
"""
