"""tpsharness fuzz: model-based differential fuzzing of a TPS.

Random programs of actor steps (programs; hostile values of every field's kind in
values; the pool's uuids in uuids; programs made from scenario files in seeds) run
on the model, the bundled fake in this kernel (model), on a reference server if
there is one, and on the server under test (executor, differential); what each
shows is compared point by point (observations, compare); hypothesis shrinks every
difference to a minimal program (runner), which is written as a scenario fixture
(fixture). A server command is run by the shell, owned and restarted after crashes
(process, with its output ring in output and its watchdog in watchdog), and each
crash is triaged from the server's exit status and last output (triage).
``python -m tpsharness fuzz`` is the face (cli, summary). Needs hypothesis.
"""
