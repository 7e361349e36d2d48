"""The instruments of a tail-call experiment: test runs and the tail-call
cost curve (testrun.py), run statistics (stats.py), the chain as a graph
(graph.py), the way runs go through it (paths.py), chains as data
(chain.py), the code the kernel runs (dump.py), what the verifier spent
(verifier.py) and packets to run on (packets.py)."""
