"""The ``gbdt`` family at the party services: vertical gradient-boosted trees
(services/engine/gbdt/, docs/adr/0012-vertical-gbdt.md, docs/adr/0014-model-families.md)."""
