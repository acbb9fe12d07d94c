// Command bpl-ecotools runs the real libraries that GitOps tools judge our objects with, so the
// tests in tests/ecosystem.rs check what Argo CD and Flux would show, not a copy of their logic.
//
//	bpl-ecotools argo-health SCRIPT.lua OBJECT.json...
//	    Argo CD's resource health: runs SCRIPT with gopher-lua the way Argo CD's
//	    util/lua (VM.runLua, ExecuteHealthLua) runs a health.lua from argocd-cm: only the
//	    package, base and table libraries open (resource.customizations.useOpenLibs unset),
//	    a 1 s limit, the object as the global `obj` with integers as numbers, and the
//	    returned table read as {status, message}. Prints one JSON line per object.
//	bpl-ecotools kstatus OBJECT.json...
//	    sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute, as Flux and `kubectl wait`-style
//	    tooling call it. Prints one JSON line per object.
//
// An OBJECT.json may hold one object or a List (kubectl get -o json).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func main() {
	if len(os.Args) < 3 {
		fail("usage: bpl-ecotools argo-health SCRIPT.lua OBJECT.json... | kstatus OBJECT.json...")
	}
	out := json.NewEncoder(os.Stdout)
	switch os.Args[1] {
	case "argo-health":
		if len(os.Args) < 4 {
			fail("argo-health needs a script and at least one object")
		}
		script, err := os.ReadFile(os.Args[2])
		check(err)
		for _, u := range objects(os.Args[3:]) {
			st, msg, err := argoHealth(u, string(script))
			check(err)
			check(out.Encode(verdict{u.GetNamespace(), u.GetName(), st, msg}))
		}
	case "kstatus":
		for _, u := range objects(os.Args[2:]) {
			res, err := status.Compute(u)
			check(err)
			check(out.Encode(verdict{u.GetNamespace(), u.GetName(), string(res.Status), res.Message}))
		}
	default:
		fail("unknown command " + os.Args[1])
	}
}

// objects reads objects the way the API machinery decodes them (integers as int64, as Argo CD's
// controller sees them).
func objects(paths []string) []*unstructured.Unstructured {
	var all []*unstructured.Unstructured
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		check(err)
		u := &unstructured.Unstructured{}
		check(u.UnmarshalJSON(raw))
		if u.IsList() {
			list, err := u.ToList()
			check(err)
			for i := range list.Items {
				all = append(all, &list.Items[i])
			}
		} else {
			all = append(all, u)
		}
	}
	return all
}

func argoHealth(u *unstructured.Unstructured, script string) (string, string, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return "", "", err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, u.Object))
	if err := l.DoString(script); err != nil {
		return "", "", err
	}
	ret := l.Get(-1)
	tbl, ok := ret.(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	st := lua.LVAsString(tbl.RawGetString("status"))
	switch st {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
	default:
		// What Argo CD shows for any other value.
		return "Unknown", "Lua returned an invalid health status", nil
	}
	return st, lua.LVAsString(tbl.RawGetString("message")), nil
}

// decodeValue turns the object into Lua values as Argo CD's util/lua decodeValue does.
func decodeValue(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case []interface{}:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]interface{}:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}

func check(err error) {
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bpl-ecotools:", msg)
	os.Exit(2)
}
