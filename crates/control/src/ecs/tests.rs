//! ECS API handler tests.
