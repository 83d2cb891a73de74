// Command opa-envoy-plugin is OPA with the Envoy ext_authz gRPC plugin,
// built from its released module so the benchmark harness can compare
// Gatehouse with it. It is the plugin's own main (cmd/opa-envoy-plugin),
// kept in a separate module so OPA's plugin dependencies never enter
// Gatehouse's go.mod.
package main

import (
	"os"

	"github.com/open-policy-agent/opa-envoy-plugin/plugin"
	"github.com/open-policy-agent/opa/cmd"
	"github.com/open-policy-agent/opa/v1/runtime"
)

func main() {
	runtime.RegisterPlugin("envoy.ext_authz.grpc", plugin.Factory{}) // the plugin's legacy name
	runtime.RegisterPlugin(plugin.PluginName, plugin.Factory{})
	if err := cmd.RootCommand.Execute(); err != nil {
		os.Exit(1)
	}
}
