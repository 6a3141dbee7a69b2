"""One model across several machines: ``serve --hostfile`` (docs/distributed.md).

``hostfile`` reads mlx.launch's hostfile; ``supervisor`` runs ``mlx.launch`` and starts the
group again when it ends; ``rank`` is what each rank runs (rank 0: the HTTP server with the
group's backend; the others: ``engine.group_follower``).
"""
