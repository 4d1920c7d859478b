"""pairsmith's plain-Python pipelines (no Prefect). Layers run one way:

    pipelines.core  <-  samplers, scorers  <-  pipelines.{loaders, pairs, step_pairs, training, evaluation,
                                                          iteration, reporting}  <-  flows

This package file imports nothing, so `import pipelines.core` costs only the core.
"""
