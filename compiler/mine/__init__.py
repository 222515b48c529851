"""Mine a workflow's procedure from its captured conversations: ``tiergate flowchart mine``.

Modules, in pipeline order: ``traces`` (JSONL -> assistant turns and what led to them),
``static`` (static vs transient system text), ``slots`` (values that travel into tool
calls), ``actions`` (each turn as an action label), ``automaton`` (prefix tree, then state
merging), ``build`` (the flowchart draft), ``miner`` (the stage that runs them all),
``fitness`` (held-out replay fitness and coverage), ``replay`` (the replay gate for a
compiled model), ``draw`` (Mermaid), ``cli``. Nothing is imported here, so that the CLI
does not load scikit-learn until ``mine`` runs.

Example::

    from compiler.mine.miner import holdout_split, mine
    from compiler.mine.traces import read_traces
    from compiler.mine.fitness import fitness
    train, held_out = holdout_split(read_traces("travel.jsonl"), 0.2)
    mined = mine(train, name="travel")
    fitness(mined, held_out).share
"""
