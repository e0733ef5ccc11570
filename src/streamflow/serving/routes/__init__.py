"""Route handlers of the API, module-level, reading the components from ``request.app.state``
(through ``serving.deps``): ``predict`` (the model), ``ops`` (health, readiness, model
info, metrics), ``admin`` (reload)."""
