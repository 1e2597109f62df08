"""tpsharness fuzz: model-based differential fuzzing of a TPS.

Random programs of actor steps (programs) run on the model, the bundled fake in
this kernel (model), and on the server under test (executor, differential); what
each shows is compared point by point (observations, compare); hypothesis shrinks
every difference to a minimal program (runner), which is written as a scenario
fixture (fixture). A server command can be started and restarted after crashes
(process). ``python -m tpsharness fuzz`` is the face (cli). Needs hypothesis.
"""
