package io.kubeless.runtime;

import io.kubeless.Context;
import io.kubeless.Event;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;

/**
 * The user's function: handler {@code Foo.foo} is method {@code foo(Event, Context)} of class
 * {@code io.kubeless.Foo} (file Foo.java), called on one instance made at start, as upstream does.
 */
final class Function {
    final Object target;
    final Method method;
    final Context context;

    private Function(Object target, Method method, Context context) {
        this.target = target;
        this.method = method;
        this.context = context;
    }

    /** Loads it, or throws LoadError with a line naming the file and what is missing. */
    static Function load(String module, String handler, Context context) throws LoadError {
        String file = module + ".java";
        Class<?> type;
        try {
            type = Class.forName("io.kubeless." + module);
        } catch (ClassNotFoundException | LinkageError e) {
            throw new LoadError(file + ": no class io.kubeless." + module
                + " (a Java function is class io.kubeless." + module + " in " + file + ", package io.kubeless)"
                + (e instanceof LinkageError ? ": " + e : ""));
        }
        Method method;
        try {
            method = type.getMethod(handler, Event.class, Context.class);
        } catch (NoSuchMethodException e) {
            throw new LoadError(file + ": class io.kubeless." + module + " has no public method " + handler
                + "(io.kubeless.Event, io.kubeless.Context)");
        }
        Object target = null;
        if (!Modifier.isStatic(method.getModifiers())) {
            try {
                target = type.getDeclaredConstructor().newInstance();
            } catch (InvocationTargetException e) {
                throw new LoadError(file + ": the constructor of io.kubeless." + module + " failed: " + e.getCause());
            } catch (ReflectiveOperationException e) {
                throw new LoadError(file + ": io.kubeless." + module + " needs a public constructor without arguments");
            }
        }
        return new Function(target, method, context);
    }

    /** Calls it; an exception it throws is thrown as is. */
    Object call(Event event) throws Throwable {
        try {
            return method.invoke(target, event, context);
        } catch (InvocationTargetException e) {
            throw e.getCause();
        }
    }

    static final class LoadError extends Exception {
        private static final long serialVersionUID = 1L;

        LoadError(String message) {
            super(message);
        }
    }
}
