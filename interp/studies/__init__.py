"""Multi-model experiments over the methods (the time-agnostic comparison): train pairs, tables."""
