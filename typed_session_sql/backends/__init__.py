"""Storage backends, each implementing `Backend`:
`.memory` for development and tests, `.sql` for everything else."""
