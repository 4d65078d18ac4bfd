//! The OpenAPI 3 description of the search routes, served at `/openapi.json`.

use serde_json::{json, Value};

fn error_reply(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn schemas() -> Value {
    let scalar = json!({ "oneOf": [{ "type": "string" }, { "type": "number" }, { "type": "boolean" }] });
    json!({
        "Scalar": scalar,
        "Range": { "type": "object", "additionalProperties": false, "minProperties": 1,
            "properties": { "gte": scalar, "gt": scalar, "lte": scalar, "lt": scalar } },
        "SearchRequest": { "type": "object", "additionalProperties": false, "properties": {
            "index": { "type": "string", "description": "Index or alias; required unless cursor is given" },
            "where": { "type": "object", "description": "Per dotted field path: a value, a list (any of) or a range",
                "additionalProperties": { "oneOf": [scalar, { "type": "array", "items": scalar, "minItems": 1, "maxItems": 1024 }, { "$ref": "#/components/schemas/Range" }] } },
            "fields": { "type": "array", "items": { "type": "string" } },
            "exclude": { "type": "array", "items": { "type": "string" } },
            "sort": { "type": "array", "maxItems": 8, "items": { "oneOf": [{ "type": "string", "description": "field, or -field for descending" },
                { "type": "object", "required": ["field"], "properties": { "field": { "type": "string" }, "order": { "enum": ["asc", "desc"] } } }] } },
            "size": { "type": "integer", "minimum": 1 },
            "page": { "type": "integer", "minimum": 1, "description": "Offset paging; refused past index.max_result_window" },
            "cursor": { "type": "string", "description": "meta.nextCursor of the previous page" }
        } },
        "SearchPage": { "type": "object", "required": ["data", "meta"], "properties": {
            "data": { "type": "array", "items": { "type": "object", "description": "_id and the selected fields; integers exact (64-bit)" } },
            "meta": { "type": "object", "required": ["total", "pageSize", "hasNext", "hasPrevious", "selectedFields"], "properties": {
                "total": { "type": "integer" }, "pageSize": { "type": "integer" }, "page": { "type": "integer" }, "totalPages": { "type": "integer" },
                "hasNext": { "type": "boolean" }, "hasPrevious": { "type": "boolean" }, "nextCursor": { "type": "string" },
                "selectedFields": { "type": "array", "items": { "type": "string" } } } }
        } },
        "Index": { "type": "object", "properties": { "index": { "type": "string" }, "aliases": { "type": "array", "items": { "type": "string" } },
            "health": { "type": "string" }, "status": { "type": "string" }, "docsCount": { "type": "integer" } } },
        "Field": { "type": "object", "properties": { "name": { "type": "string" }, "type": { "type": "string" }, "subField": { "type": "boolean" } } },
        "Error": { "type": "object", "required": ["error", "code"], "properties": { "error": { "type": "string" }, "code": { "type": "string" } } }
    })
}

fn ok(schema: Value) -> Value {
    json!({ "description": "OK", "content": { "application/json": { "schema": schema } } })
}

fn paths() -> Value {
    let common = json!({ "400": error_reply("Invalid request (nothing was searched)"), "401": error_reply("Bearer token required"),
        "404": error_reply("Index not searchable here"), "429": error_reply("Rate limited; see Retry-After"), "502": error_reply("Search server failed") });
    let with = |ok_reply: Value| {
        let mut responses = common.clone();
        responses["200"] = ok_reply;
        responses
    };
    let page = json!({ "$ref": "#/components/schemas/SearchPage" });
    let index_param = json!({ "name": "index", "in": "path", "required": true, "schema": { "type": "string" } });
    json!({
        "/search": { "post": { "summary": "Search an index", "requestBody": { "required": true,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/SearchRequest" } } } }, "responses": with(ok(page.clone())) } },
        "/search/{index}/scroll": { "get": { "summary": "The page a cursor leads to", "parameters": [index_param,
            { "name": "cursor", "in": "query", "required": true, "schema": { "type": "string" } },
            { "name": "size", "in": "query", "schema": { "type": "integer", "minimum": 1 } },
            { "name": "fields", "in": "query", "description": "Comma-separated", "schema": { "type": "string" } }], "responses": with(ok(page)) } },
        "/indices": { "get": { "summary": "Searchable indices", "responses": with(ok(json!({ "type": "array", "items": { "$ref": "#/components/schemas/Index" } }))) } },
        "/indices/{index}/fields": { "get": { "summary": "An index's fields", "parameters": [index_param],
            "responses": with(ok(json!({ "type": "array", "items": { "$ref": "#/components/schemas/Field" } }))) } },
        "/health": { "get": { "summary": "Whether the search server answers", "responses": { "200": { "description": "OK" }, "503": { "description": "Unavailable" } } } }
    })
}

pub fn document() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": { "title": "mongo-elastic-sync search API", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths(),
        "components": { "schemas": schemas(), "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } },
        "security": [{ "bearer": [] }, {}]
    })
}
