"""The bundled "Session length" dashboard: YAML sources and their builder (installed as
``shillelagh_amplitude.dashboards``; ``amplitude-dashboard`` runs :func:`build.main`)."""
