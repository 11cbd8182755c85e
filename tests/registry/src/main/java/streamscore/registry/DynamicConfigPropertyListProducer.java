package streamscore.registry;

import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import java.util.List;
import javax.enterprise.context.ApplicationScoped;
import javax.enterprise.inject.Produces;

/**
 * Stands in for the bean that Apicurio's config-index Quarkus extension
 * generates at build time. That extension's deployment half
 * (apicurio-common-app-components-config-index-deployment) is not on the
 * Maven Central proxy here, so its runtime half is excluded in pom.xml and
 * this producer supplies the list instead: empty, so no property can be
 * changed at runtime through the registry's admin API, and every setting
 * keeps the value of its static configuration. Nothing else changes.
 */
@ApplicationScoped
public class DynamicConfigPropertyListProducer {
    @Produces
    @ApplicationScoped
    DynamicConfigPropertyList dynamicConfigPropertyList() {
        return new DynamicConfigPropertyList(List.of());
    }
}
