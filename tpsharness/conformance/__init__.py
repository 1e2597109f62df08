"""A conformance suite any TPS can be run against (PROTOCOL.md sections 1-3).

    pytest --pyargs tpsharness.conformance --tps HOST:PORT

Without --tps it runs against the bundled fake TPS, where it passes completely.
Where field servers legitimately differ from the fake (split or pipelined
requests, large bodies), a test reports what the server did as an xfail with the
reason, never a silent pass; a server that dies fails the test that killed it.
"""
