"""The bottom layer: what every other package may import, and which imports none of them.

    schema     the tables (prompts, candidates, scores, pairs, drops) and the one drop-row constructor
    errors     the errors a user can fix (one line, exit code 2 in the CLI)
    ids        content-hash ids and per-prompt seeds
    io         atomic Parquet/JSON writes, a streaming Parquet sink, a row-range reader
    config     the strict config base, the file loader and the shared sections (prompts, sampler, executor)
    registry   "module:attr" names resolved lazily (samplers, scorers, rules, loaders are chosen by name)
    devices    device and dtype choice (bf16 on GPU, fp32 on CPU)
    models     model resolution (the embedded SmolLM2 converted once from its GGUF)
    versions   installed package versions, for manifests
    progress   batch progress lines, and live progress inside a batch (the samplers' reports)
    cost       the dry run's plan and the token bounds of the budget
    run        the run core: planning, shards, accounting, manifest header, run_local
    shards     the shard cache: which runs use it (shards.json), listing, collecting
    executors  where batches run: local or Ray (with or without Prefect), started under the token budget
"""
