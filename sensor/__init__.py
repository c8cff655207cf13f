"""apisensor's sensor: capture sources, L2-L4 decoding, TCP reassembly and HTTP parsing.

Stages, in the order a packet flows through them:
``sources`` -> ``decode`` (+ ``tunnels``, ``ipfrag``) -> ``tcp`` -> ``http1`` / ``http2``
-> :class:`sensor.transaction.Transaction`.  ``pipeline`` wires them together.
Nothing in this package imports ``discovery`` or ``graph``.
"""
