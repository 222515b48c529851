"""Mine a workflow's procedure from its captured conversations: ``tiergate flowchart mine``.

Example::

    from compiler.mine import read_traces, holdout_split, mine, fitness
    train, held_out = holdout_split(read_traces("travel.jsonl"), 0.2)
    mined = mine(train, name="travel")
    fitness(mined, held_out).share
"""
