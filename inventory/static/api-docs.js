// Start Swagger UI on the OpenAPI document embedded in the page (no fetch, no external URL).
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  var spec = JSON.parse(document.getElementById("planb-openapi").textContent);
  window.ui = SwaggerUIBundle({
    spec: spec,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,          // never the public validator service
    persistAuthorization: false, // a pasted token is not kept in the browser
    docExpansion: "list",
    defaultModelsExpandDepth: 0
  });
});
