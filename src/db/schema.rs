// @generated automatically by Diesel CLI.

diesel::table! {
    dispatches (id) {
        id -> Int8,
        message_id -> Uuid,
        execution_id -> Nullable<Int8>,
        routing_key -> Text,
        body -> Text,
        correlation_id -> Nullable<Text>,
        created_at -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        locked_until -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
        message_type -> Text,
        exchange -> Nullable<Text>,
    }
}

diesel::table! {
    environments (id) {
        id -> Int8,
        name -> Text,
        platform -> Text,
        version -> Text,
        active -> Bool,
        catalog_version -> Int8,
    }
}

diesel::table! {
    execution_pairs (execution_id, scenario_id, environment_id) {
        execution_id -> Int8,
        scenario_id -> Int8,
        environment_id -> Int8,
        status -> Text,
        attempt -> Int4,
        source_execution_id -> Int8,
        message_id -> Nullable<Uuid>,
        started_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
        duration_ms -> Nullable<Int8>,
        report_url -> Nullable<Text>,
        detail -> Nullable<Text>,
        reason -> Nullable<Text>,
        published_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    callback_deliveries (event_id) {
        event_id -> Uuid,
        execution_id -> Int8,
        url -> Text,
        body -> Text,
        attempts -> Int4,
        next_attempt_at -> Nullable<Timestamptz>,
        lease_until -> Nullable<Timestamptz>,
        last_status -> Nullable<Int4>,
        last_error -> Nullable<Text>,
        first_attempt_at -> Nullable<Timestamptz>,
        last_attempt_at -> Nullable<Timestamptz>,
        delivered_at -> Nullable<Timestamptz>,
        given_up_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    executions (id) {
        id -> Int8,
        plan_id -> Int8,
        kind -> Text,
        source_execution_id -> Nullable<Int8>,
        requested_by -> Int8,
        framework_type -> Nullable<Text>,
        requested_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
        open_pairs -> Int4,
        trigger -> Text,
        retry_of -> Nullable<Int8>,
        retry_budget -> Int4,
        callback_url -> Nullable<Text>,
    }
}

diesel::table! {
    idempotency_keys (subject, key) {
        subject -> Text,
        key -> Text,
        request -> Text,
        status_code -> Int2,
        response_body -> Text,
        execution_id -> Nullable<Int8>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    plan_environments (plan_id, environment_id) {
        plan_id -> Int8,
        environment_id -> Int8,
    }
}

diesel::table! {
    plan_scenarios (plan_id, scenario_id) {
        plan_id -> Int8,
        scenario_id -> Int8,
    }
}

diesel::table! {
    plans (id) {
        id -> Int8,
        project_id -> Int8,
        name -> Text,
        framework_type -> Nullable<Text>,
        run_timeout_secs -> Nullable<Int4>,
        retry_failed -> Int4,
        active -> Bool,
        catalog_version -> Int8,
        results_version -> Int8,
    }
}

diesel::table! {
    project_members (project_id, user_id) {
        project_id -> Int8,
        user_id -> Int8,
    }
}

diesel::table! {
    projects (id) {
        id -> Int8,
        name -> Text,
        active -> Bool,
        catalog_version -> Int8,
    }
}

diesel::table! {
    scenarios (id) {
        id -> Int8,
        project_id -> Int8,
        name -> Text,
        active -> Bool,
        catalog_version -> Int8,
    }
}

diesel::table! {
    users (id) {
        id -> Int8,
        username -> Text,
        active -> Bool,
        catalog_version -> Int8,
    }
}

diesel::joinable!(callback_deliveries -> executions (execution_id));
diesel::joinable!(dispatches -> executions (execution_id));
diesel::joinable!(execution_pairs -> environments (environment_id));
diesel::joinable!(execution_pairs -> executions (execution_id));
diesel::joinable!(execution_pairs -> scenarios (scenario_id));
diesel::joinable!(executions -> plans (plan_id));
diesel::joinable!(executions -> users (requested_by));
diesel::joinable!(idempotency_keys -> executions (execution_id));
diesel::joinable!(plan_environments -> environments (environment_id));
diesel::joinable!(plan_environments -> plans (plan_id));
diesel::joinable!(plan_scenarios -> plans (plan_id));
diesel::joinable!(plan_scenarios -> scenarios (scenario_id));
diesel::joinable!(plans -> projects (project_id));
diesel::joinable!(project_members -> projects (project_id));
diesel::joinable!(project_members -> users (user_id));
diesel::joinable!(scenarios -> projects (project_id));

diesel::allow_tables_to_appear_in_same_query!(
    callback_deliveries,
    dispatches,
    environments,
    execution_pairs,
    executions,
    idempotency_keys,
    plan_environments,
    plan_scenarios,
    plans,
    project_members,
    projects,
    scenarios,
    users,
);
