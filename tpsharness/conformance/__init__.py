"""A conformance suite any TPS can be run against (docs/protocol.md sections 1-3).

    pytest --pyargs tpsharness.conformance --tps HOST:PORT

Without --tps it runs against the bundled fake TPS, where it passes completely.
Where field servers legitimately differ from the fake (split or pipelined
requests, large bodies), a test reports what the server did as an xfail with the
reason, never a silent pass. Tests marked ``destructive`` (the second-serial case
that crashed a field server, the 200 KiB burst) run against a real TPS only with
--tps-destructive, and last. After every test the plugin checks that the TPS still
accepts connections: the test during which it died fails saying so, and the rest
are skipped with "the TPS died during <test>".
"""
