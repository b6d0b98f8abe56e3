"""Post-hoc analyses of trained models (methods.md section 6)."""
