"""What users import into their own tests: fakes, capture helpers and provider emulators."""
