"""End-to-end applications built from the library: the demo investigation, the round trip, and the
trigram distillation proxy the strength guard is given. They sit above everything else: they use
the simulation models (:mod:`fingerprint.sim`), the collector, the pipeline and the reports."""
