// The client as the gateway serves it (app/static/client.js, the committed build; build.test.mjs checks it
// is the build of src/), so the tests exercise exactly what browsers get.
export * from "../../../../app/static/client.js";
