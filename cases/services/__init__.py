"""The case lifecycle as plain functions: the admin, commands and tasks call these."""
